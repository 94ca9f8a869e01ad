"""The Hub agent: runs on every tenant server, registers with the Hub, heartbeats,
reports backups and AI token usage, and executes the commands the Hub hands it."""

__version__ = "0.1.0"
