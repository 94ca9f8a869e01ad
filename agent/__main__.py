"""`python -m agent`: load the configuration and run until SIGTERM or SIGINT.
`python -m agent healthcheck`: exit 0 while the loop is going round (for Docker)."""

from __future__ import annotations

import logging
import signal
import sys
import time
from types import FrameType

from agent.config import Config, ConfigError, load_config
from agent.logs import setup_logging
from agent.loop import Agent
from agent.storage import read_json

# A loop round may take this long beyond its planned wait (a slow Hub, a slow docker).
HEALTH_SLACK_SECONDS = 120


def healthcheck(config: Config) -> int:
    alive = read_json(config.state_dir / "alive.json")
    if not isinstance(alive, dict):
        print("agent loop has not gone round yet")
        return 1
    overdue = time.time() - float(alive.get("at", 0)) - float(alive.get("next_in", 0))
    if overdue > HEALTH_SLACK_SECONDS:
        print(f"agent loop overdue by {overdue:.0f}s")
        return 1
    return 0


def main(argv: list[str]) -> int:
    try:
        config = load_config()
    except ConfigError as exc:
        setup_logging()
        logging.getLogger("agent").error("configuration: %s", exc)
        return 2
    if argv[:1] == ["healthcheck"]:
        return healthcheck(config)
    if argv:
        print("usage: python -m agent [healthcheck]", file=sys.stderr)
        return 2
    setup_logging(config.log_level)
    agent = Agent(config)

    def stop(signum: int, frame: FrameType | None) -> None:
        agent.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
