"""The certbot stand-in: certbot 2.1 as Debian 12 ships it, for what a setup script asks
of it, refusing what it refuses with its own words.

`certonly` needs an authenticator named on the command line in non-interactive use;
only the manual plugin is emulated (the others are not installed on a fresh Debian 12,
or need a web server the Internet can reach), and it needs `--manual-auth-hook` when
non-interactive. A hook that does not exist or is not executable stops certbot before
anything happens. The auth hook runs once per challenge with CERTBOT_DOMAIN,
CERTBOT_VALIDATION, CERTBOT_REMAINING_CHALLENGES and CERTBOT_ALL_DOMAINS; then "the
CA" looks for each value at `_acme-challenge.<domain>` through the sandbox's public
resolver (SANDBOX_DNS_RESOLVER, the Cloudflare emulator's, answering for delegated
zones only), the cleanup hook runs (with CERTBOT_AUTH_OUTPUT), and a certificate is
issued only if every value was there. The lineage is certbot's: archive/<name>/*N.pem,
live/<name>/*.pem linking to them, renewal/<name>.conf remembering the hooks, which
`certbot renew` (what certbot.timer runs) uses for certificates with under 30 days
left, running the deploy hooks after.

Every hook run, with the environment it got, and every value looked for are appended
to $HOST_ROOT/var/log/sandbox/certbot.jsonl."""

from __future__ import annotations

import os
import sys
import time

from standin_lib import lean
from standin_lib.lean import host_root

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SERVER = "https://acme-v02.api.letsencrypt.org/directory"
ACCOUNTS = "accounts/acme-v02.api.letsencrypt.org/directory"
TOS = "https://letsencrypt.org/documents/LE-SA-v1.3-September-21-2022.pdf"
RENEW_BEFORE_DAYS = 30
VERSION = "2.1.0"
ADVICE = (
    "Ask for help or search for solutions at https://community.letsencrypt.org. See the logfile "
    "/var/log/letsencrypt/letsencrypt.log or re-run Certbot with -v for more details."
)
USAGE = "usage: \n  certbot [SUBCOMMAND] [options] [-d DOMAIN] [-d DOMAIN] ...\n"

FLAGS = {
    "-n", "--non-interactive", "--noninteractive", "--agree-tos", "--no-eff-email", "--eff-email",
    "--register-unsafely-without-email", "--manual", "--nginx", "--apache", "--standalone", "--webroot",
    "--force-renewal", "--renew-by-default", "--keep-until-expiring", "--keep", "--expand", "--dry-run",
    "-q", "--quiet", "-v", "--verbose", "--disable-hook-validation", "--staging", "--test-cert",
    "--no-random-sleep-on-renew", "--no-autorenew",
}  # fmt: skip
VALUED = {
    "-m": "email", "--email": "email", "-d": "domains", "--domains": "domains", "--domain": "domains",
    "--cert-name": "cert_name", "--preferred-challenges": "pref_challs", "-a": "authenticator",
    "--authenticator": "authenticator", "-i": "installer", "--installer": "installer",
    "--manual-auth-hook": "manual_auth_hook", "--manual-cleanup-hook": "manual_cleanup_hook",
    "--deploy-hook": "deploy_hook", "--renew-hook": "deploy_hook", "--pre-hook": "pre_hook",
    "--post-hook": "post_hook", "--key-type": "key_type", "--elliptic-curve": "elliptic_curve",
    "--rsa-key-size": "rsa_key_size", "-w": "webroot_path", "--webroot-path": "webroot_path",
    "--server": "server",
}  # fmt: skip
DNS_PLUGINS = (
    "cloudflare", "digitalocean", "dnsimple", "dnsmadeeasy", "gehirn", "google", "linode", "luadns",
    "nsone", "ovh", "rfc2136", "route53", "sakuracloud",
)  # fmt: skip
VERBS = {"certonly", "run", "renew", "certificates", "delete", "revoke", "register", "plugins"}
CHALLENGE_NAMES = {"dns": "dns-01", "dns-01": "dns-01", "http": "http-01", "http-01": "http-01"}


class CertbotError(Exception):
    """certbot's errors.Error: its message, the advice line, exit 1."""


class UsageError(Exception):
    """argparse refused the command line: exit 2."""


# --- the command line ---------------------------------------------------------------


def parse(args: list[str]) -> tuple[str, set[str], dict[str, list[str]]]:
    verb = ""
    flags: set[str] = set()
    values: dict[str, list[str]] = {}
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        name, has_value, inline = arg.partition("=") if arg.startswith("--") else (arg, False, "")
        if name in VALUED:
            if has_value:
                value = inline
            elif index < len(args):
                value = args[index]
                index += 1
            else:
                raise UsageError(f"argument {name}: expected one argument")
            values.setdefault(VALUED[name], []).append(value)
        elif arg in FLAGS or (arg.startswith("--dns-") and arg[6:] in DNS_PLUGINS):
            flags.add(arg)
        elif not arg.startswith("-") and not verb:
            if arg not in VERBS:
                raise UsageError(f"argument SUBCOMMAND: invalid choice: {arg!r}")
            verb = arg
        else:
            raise UsageError(f"unrecognized arguments: {arg}")
    return verb or "run", flags, values


def _domains(values: dict[str, list[str]]) -> list[str]:
    found: list[str] = []
    for value in values.get("domains", []):
        for domain in value.replace(",", " ").split():
            domain = domain.lower().rstrip(".")
            if domain not in found:
                found.append(domain)
    for domain in found:
        labels = domain.removeprefix("*.").split(".")
        if len(labels) < 2 or "*" in domain[1:] or not all(label and len(label) < 64 for label in labels):
            raise CertbotError(f"Requested name {domain} is an invalid domain name.")
    return found


def _noninteractive(flags: set[str]) -> bool:
    return bool(flags & {"-n", "--non-interactive", "--noninteractive"})


def _missing_flag(message: str, flag: str = "", extra: str = "") -> CertbotError:
    text = "Missing command line flag or config entry for this setting:\n" + message
    if extra:
        text += "\n" + extra
    if flag:
        text += f"\n\n(You can set this with the {flag} flag)"
    return CertbotError(text)


# --- plugins and hooks --------------------------------------------------------------


def _authenticator(flags: set[str], values: dict[str, list[str]], *, noninteractive: bool) -> str:
    requested = ""
    asked = [*values.get("authenticator", [])]
    asked += [flag[2:] for flag in ("--nginx", "--apache", "--standalone", "--webroot", "--manual") if flag in flags]
    asked += [flag[2:] for flag in sorted(flags) if flag.startswith("--dns-")]
    for name in asked:
        if requested and requested != name:
            raise CertbotError(
                f"Too many flags setting configurators/installers/authenticators {requested!r} -> {name!r}"
            )
        requested = name
    if not requested:
        if noninteractive:
            raise CertbotError(
                "Missing command line flags. For non-interactive execution, you will need to specify a plugin on "
                "the command line.  Run with '--help plugins' to see a list of options, and see "
                "https://eff.org/letsencrypt-plugins for more detail on what the plugins do and how to use them."
            )
        raise CertbotError("sandbox certbot: no terminal to choose a plugin on; name one (--manual)")
    if requested in ("apache", "nginx") or requested.startswith("dns-"):
        # Not on a fresh Debian 12: python3-certbot-<plugin> is a package of its own.
        raise CertbotError(f"The requested {requested} plugin does not appear to be installed")
    if requested != "manual":
        if requested not in ("standalone", "webroot"):
            raise CertbotError(f"The requested {requested} plugin does not appear to be installed")
        raise CertbotError(
            f"sandbox certbot: the {requested} plugin's HTTP-01 needs this host reachable from the Internet, "
            "which no sandbox host is; use --manual with DNS-01"
        )
    return requested


def _exe_exists(command: str) -> bool:
    if os.path.dirname(command):
        return os.path.isfile(command) and os.access(command, os.X_OK)
    return any(
        os.path.isfile(os.path.join(folder, command)) and os.access(os.path.join(folder, command), os.X_OK)
        for folder in os.environ.get("PATH", "").split(os.pathsep)
    )


def validate_hook(shell_cmd: str | None, hook_name: str) -> None:
    """certbot's hooks.validate_hook, with its words (and its spelling of them)."""
    if not shell_cmd:
        return
    cmd = shell_cmd.split(None, 1)[0]
    if not _exe_exists(cmd):
        if os.path.exists(cmd):
            raise CertbotError(f"{cmd}-hook command {hook_name} exists, but is not executable.")
        raise CertbotError(
            f"Unable to find {hook_name}-hook command {cmd} in the PATH.\n(PATH is {os.environ['PATH']})"
        )


def _prepare_manual(params: dict[str, str], *, noninteractive: bool, validate: bool) -> None:
    if noninteractive and not params.get("manual_auth_hook"):
        raise CertbotError(
            "The manual plugin is not working; there may be problems with your existing configuration.\n"
            "The error was: PluginError('An authentication script must be provided with --manual-auth-hook "
            "when using the manual plugin non-interactively.')"
        )
    if validate:
        validate_hook(params.get("manual_auth_hook"), "manual-auth")
        validate_hook(params.get("manual_cleanup_hook"), "manual-cleanup")


def _log(entry: dict[str, Any]) -> None:
    path = host_root() / "var" / "log" / "sandbox" / "certbot.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(lean.dumps({"time": time.time(), **entry}) + "\n")


def _run_hook(kind: str, command: str, env: dict[str, str], label: str, *, quiet: bool) -> tuple[int, str]:
    """Run a hook through the shell, as certbot does, and report it as certbot does."""
    import subprocess

    full_env = {**os.environ, **env}
    done = subprocess.run(command, shell=True, env=full_env, capture_output=True, text=True, timeout=900)  # noqa: S602 - certbot runs hooks through the shell
    _log({"event": "hook", "hook": kind, "command": command, "env": full_env, "exit_code": done.returncode})
    out, err = done.stdout.strip(), done.stderr.strip()
    if done.returncode != 0:
        sys.stderr.write(f"{label} reported error code {done.returncode}\n")
    if out and not quiet:
        print(f"{label} ran with output:\n" + "\n".join(" " + line for line in out.splitlines()))
    if err:
        sys.stderr.write(
            f"{label} ran with error output:\n" + "\n".join(" " + line for line in err.splitlines()) + "\n"
        )
    return done.returncode, done.stdout


# --- the CA's side: challenges and what it sees -------------------------------------


def resolve(name: str, record_type: str) -> list[str]:
    """What a public resolver answers (the sandbox's: SANDBOX_DNS_RESOLVER)."""
    import socket

    url = os.environ.get("SANDBOX_DNS_RESOLVER", "")
    if not url.startswith("http://"):
        raise CertbotError("sandbox certbot: SANDBOX_DNS_RESOLVER is not set; the CA cannot look up DNS")
    authority, _, path = url[len("http://") :].partition("/")
    host, _, port = authority.partition(":")
    request = f"GET /{path}?name={name}&type={record_type} HTTP/1.0\r\nHost: {authority}\r\n\r\n"
    with socket.create_connection((host, int(port or 80)), timeout=10) as sock:
        sock.sendall(request.encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if head.split(b" ", 2)[1:2] != [b"200"]:
        raise CertbotError(f"sandbox certbot: the resolver answered {head[:60]!r}")
    answers = lean.loads(body.decode()).get("Answer") or []
    return [str(a["data"]).strip('"') if record_type == "TXT" else str(a["data"]) for a in answers]


def _random_token() -> str:
    import base64

    return base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()


def _challenge_types(domains: list[str], pref: list[str]) -> list[str]:
    """The challenge the manual plugin answers for each domain: the CA offers only
    DNS-01 for a wildcard, and the plugin prefers HTTP-01 unless told otherwise."""
    wanted: list[str] = []
    for value in pref:
        for name in value.replace(",", " ").split():
            if name.lower() in CHALLENGE_NAMES and CHALLENGE_NAMES[name.lower()] not in wanted:
                wanted.append(CHALLENGE_NAMES[name.lower()])
            elif name.lower() not in CHALLENGE_NAMES:
                raise UsageError(f"argument --preferred-challenges: Unrecognized challenges: {name}")
    if pref and not wanted:
        raise CertbotError("None of the preferred challenges are supported by the selected plugin")
    order = wanted or ["http-01", "dns-01"]
    chosen = []
    for domain in domains:
        offered = ["dns-01"] if domain.startswith("*.") else ["http-01", "dns-01"]
        usable = [typ for typ in order if typ in offered]
        if not usable:
            message = (
                "Client with the currently selected authenticator does not support any combination of challenges "
                "that will satisfy the CA."
            )
            if offered == ["dns-01"]:
                message += " You may need to use an authenticator plugin that can do challenges over DNS."
            raise CertbotError(message)
        chosen.append(usable[0])
    return chosen


def authorize(domains: list[str], params: dict[str, str], *, quiet: bool) -> None:
    """Run the auth hooks, let the CA look, run the cleanup hooks; raise unless every
    challenge was met."""
    types = _challenge_types(domains, [params.get("pref_challs", "")] if params.get("pref_challs") else [])
    achalls = [
        {"domain": d.removeprefix("*."), "type": t, "validation": _random_token(), "token": _random_token()}
        for d, t in zip(domains, types, strict=True)
    ]
    all_domains = ",".join(a["domain"] for a in achalls)
    envs = []
    for position, achall in enumerate(achalls):
        env = {
            "CERTBOT_DOMAIN": achall["domain"],
            "CERTBOT_VALIDATION": achall["validation"],
            "CERTBOT_ALL_DOMAINS": all_domains,
            "CERTBOT_REMAINING_CHALLENGES": str(len(achalls) - position - 1),
        }
        if achall["type"] == "http-01":
            env["CERTBOT_TOKEN"] = achall["token"]
        _, out = _run_hook(
            "auth", params["manual_auth_hook"], env, f"Hook '--manual-auth-hook' for {achall['domain']}", quiet=quiet
        )
        envs.append({**env, "CERTBOT_AUTH_OUTPUT": out.strip()})
    problems = []
    for achall in achalls:
        domain = achall["domain"]
        if achall["type"] == "dns-01":
            name = f"_acme-challenge.{domain}"
            seen = resolve(name, "TXT")
            _log({"event": "validation", "name": name, "expected": achall["validation"], "seen": seen})
            if achall["validation"] not in seen:
                detail = (
                    f'Incorrect TXT record "{seen[0]}" found at {name}' if seen else f"No TXT record found at {name}"
                )
                problems.append((domain, "unauthorized", detail))
        else:
            addresses = resolve(domain, "A")
            url = f"http://{domain}/.well-known/acme-challenge/{achall['token']}"
            if addresses:
                problems.append((domain, "connection", f"{addresses[0]}: Fetching {url}: Connection refused"))
            else:
                detail = (
                    f"DNS problem: NXDOMAIN looking up A for {domain} - check that a DNS record exists for this domain"
                )
                problems.append((domain, "dns", detail))
    if params.get("manual_cleanup_hook"):
        for achall, env in zip(achalls, envs, strict=True):
            _run_hook(
                "cleanup",
                params["manual_cleanup_hook"],
                env,
                f"Hook '--manual-cleanup-hook' for {achall['domain']}",
                quiet=quiet,
            )
    if problems:
        text = [
            "\nCertbot failed to authenticate some domains (authenticator: manual). "
            "The Certificate Authority reported these problems:"
        ]
        text += [f"\n  Domain: {domain}\n  Type:   {typ}\n  Detail: {detail}\n" for domain, typ, detail in problems]
        resources = " and ".join(
            sorted({"DNS TXT records" if a["type"] == "dns-01" else "challenge files" for a in achalls})
        )
        dns_hint = (
            " and that it waits a sufficient duration of time for DNS propagation"
            if any(a["type"] == "dns-01" for a in achalls)
            else ""
        )
        text.append(
            f"\nHint: The Certificate Authority failed to verify the {resources} created by the --manual-auth-hook. "
            f'Ensure that this hook is functioning correctly{dns_hint}. Refer to "certbot --help manual" and the '
            "Certbot User Guide.\n"
        )
        print("".join(text))
        raise CertbotError("Some challenges have failed.")


# --- the lineage --------------------------------------------------------------------


def _openssl(*args: str) -> Any:
    import subprocess

    return subprocess.run(["/usr/bin/openssl", *args], capture_output=True, text=True, timeout=60)


def _letsencrypt() -> str:
    return str(host_root() / "etc" / "letsencrypt")


def _write_lineage(name: str, domains: list[str], params: dict[str, str]) -> None:
    le = _letsencrypt()
    archive, live = os.path.join(le, "archive", name), os.path.join(le, "live", name)
    os.makedirs(archive, mode=0o700, exist_ok=True)
    os.makedirs(live, exist_ok=True)
    numbers = [int(f[4:-4]) for f in os.listdir(archive) if f.startswith("cert") and f[4:-4].isdigit()]
    version = max(numbers, default=0) + 1
    days = os.environ.get("SANDBOX_CERT_DAYS", "90")
    cert, key = os.path.join(archive, f"cert{version}.pem"), os.path.join(archive, f"privkey{version}.pem")
    made = _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", days,
        "-subj", f"/CN={domains[0]}", "-addext", "subjectAltName=" + ",".join(f"DNS:{d}" for d in domains),
        "-keyout", key, "-out", cert,
    )  # fmt: skip
    if made.returncode != 0:
        raise CertbotError(f"sandbox certbot: openssl could not make the certificate: {made.stderr.strip()}")
    os.chmod(key, 0o600)
    text = lean.Path(cert).read_text()
    for kind in ("chain", "fullchain"):
        lean.Path(os.path.join(archive, f"{kind}{version}.pem")).write_text(text)
    for kind in ("cert", "chain", "fullchain", "privkey"):
        link = os.path.join(live, f"{kind}.pem")
        tmp = f"{link}.new"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(f"../../archive/{name}/{kind}{version}.pem", tmp)
        os.replace(tmp, link)
    readme = os.path.join(live, "README")
    if not os.path.exists(readme):
        lean.Path(readme).write_text(
            "This directory contains your keys and certificates.\n\n"
            "`privkey.pem`  : the private key for your certificate.\n"
            "`fullchain.pem`: the certificate file used in most server software.\n"
            "`chain.pem`    : used for OCSP stapling in Nginx >=1.3.7.\n"
            "`cert.pem`     : will break many server configurations, and should not be used\n"
            "                 without reading further documentation (see link below).\n"
        )
    lines = [
        f"# renew_before_expiry = {RENEW_BEFORE_DAYS} days",
        f"version = {VERSION}",
        f"archive_dir = /etc/letsencrypt/archive/{name}",
        *(f"{kind} = /etc/letsencrypt/live/{name}/{kind}.pem" for kind in ("cert", "privkey", "chain", "fullchain")),
        "",
        "# Options used in the renewal process",
        "[renewalparams]",
        f"account = {_account_id()}",
        "authenticator = manual",
        f"server = {SERVER}",
        "key_type = ecdsa",
    ]
    for key_name in ("pref_challs", "manual_auth_hook", "manual_cleanup_hook", "deploy_hook"):
        if params.get(key_name):
            value = params[key_name]
            if key_name == "pref_challs":
                value = ",".join(CHALLENGE_NAMES.get(n.lower(), n) for n in value.replace(",", " ").split()) + ","
            lines.append(f"{'renew_hook' if key_name == 'deploy_hook' else key_name} = {value}")
    renewal = os.path.join(le, "renewal")
    os.makedirs(renewal, exist_ok=True)
    lean.Path(os.path.join(renewal, f"{name}.conf")).write_text("\n".join(lines) + "\n")


def _read_renewal(path: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for line in lean.Path(path).read_text().splitlines():
        key, sep, value = line.partition(" = ")
        if sep and not key.startswith("#"):
            params[key.strip()] = value.strip()
    if params.get("pref_challs"):
        params["pref_challs"] = params["pref_challs"].rstrip(",")
    if params.get("renew_hook"):
        params["deploy_hook"] = params["renew_hook"]
    return params


def _cert_domains(cert: str) -> list[str]:
    shown = _openssl("x509", "-noout", "-ext", "subjectAltName", "-in", cert).stdout
    return [part.strip()[4:] for part in shown.splitlines()[-1].split(",") if part.strip().startswith("DNS:")]


def _due(cert: str) -> bool:
    """Fewer than RENEW_BEFORE_DAYS days left (openssl's -checkend says so)."""
    return _openssl("x509", "-checkend", str(RENEW_BEFORE_DAYS * 86400), "-noout", "-in", cert).returncode != 0


def _expiry(cert: str) -> str:
    end = _openssl("x509", "-enddate", "-noout", "-in", cert).stdout.strip().partition("=")[2]
    parsed = time.strptime(end, "%b %d %H:%M:%S %Y %Z")
    return time.strftime("%Y-%m-%d", parsed)


# --- the account --------------------------------------------------------------------


def _account_id() -> str:
    folder = os.path.join(_letsencrypt(), ACCOUNTS)
    found = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    return found[0] if found else ""


def _ensure_account(flags: set[str], values: dict[str, list[str]], *, noninteractive: bool) -> None:
    if _account_id():
        return
    email = (values.get("email") or [""])[-1]
    if not email and "--register-unsafely-without-email" not in flags and noninteractive:
        raise CertbotError("No email was provided and --register-unsafely-without-email was not present.")
    if "--agree-tos" not in flags:
        raise _missing_flag(
            f"Please read the Terms of Service at {TOS}. You must agree in order to register with the ACME server. "
            "Do you agree?",
            "--agree-tos",
        )
    account = os.path.join(_letsencrypt(), ACCOUNTS, _random_token()[:32])
    os.makedirs(account, mode=0o700, exist_ok=True)
    contact = [f"mailto:{email}"] if email else []
    lean.Path(os.path.join(account, "regr.json")).write_text(lean.dumps({"body": {"contact": contact}, "uri": SERVER}))
    lean.Path(os.path.join(account, "meta.json")).write_text(
        lean.dumps({"creation_dt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "creation_host": "sandbox"})
    )


# --- the verbs ----------------------------------------------------------------------


def _run_deploy_hooks(name: str, domains: list[str], params: dict[str, str], *, directory: bool, quiet: bool) -> None:
    env = {
        "RENEWED_LINEAGE": f"/etc/letsencrypt/live/{name}",
        "RENEWED_DOMAINS": " ".join(domains),
    }
    commands = []
    if directory:
        folder = os.path.join(_letsencrypt(), "renewal-hooks", "deploy")
        if os.path.isdir(folder):
            commands += [
                os.path.join(folder, f) for f in sorted(os.listdir(folder)) if _exe_exists(os.path.join(folder, f))
            ]
    if params.get("deploy_hook"):
        commands.append(params["deploy_hook"])
    for command in commands:
        _run_hook("deploy", command, env, f"Hook '--deploy-hook' for {name}", quiet=quiet)


def certonly(flags: set[str], values: dict[str, list[str]]) -> int:
    noninteractive = _noninteractive(flags)
    quiet = bool(flags & {"-q", "--quiet"})
    validate = "--disable-hook-validation" not in flags
    params = {key: values[key][-1] for key in VALUED.values() if values.get(key)}
    if validate:
        for key, hook_name in (("pre_hook", "pre"), ("post_hook", "post"), ("deploy_hook", "deploy")):
            validate_hook(params.get(key), hook_name)
    _authenticator(flags, values, noninteractive=noninteractive)
    _prepare_manual(params, noninteractive=noninteractive, validate=validate)
    _ensure_account(flags, values, noninteractive=noninteractive)
    domains = _domains(values)
    if not domains:
        raise _missing_flag(
            "Please enter the domain name(s) you would like on your certificate (comma and/or space separated)",
            "--domains",
        )
    name = params.get("cert_name") or domains[0].removeprefix("*.")
    live_cert = os.path.join(_letsencrypt(), "live", name, "cert.pem")
    if os.path.exists(live_cert) and sorted(_cert_domains(live_cert)) == sorted(domains):
        if not _due(live_cert) and not flags & {"--force-renewal", "--renew-by-default"}:
            if not quiet:
                print("Certificate not yet due for renewal; no action taken.")
            return 0
        if not quiet:
            print(f"Renewing an existing certificate for {' and '.join(domains)}")
    elif not quiet:
        print(f"Requesting a certificate for {' and '.join(domains)}")
    authorize(domains, params, quiet=quiet)
    _write_lineage(name, domains, params)
    _run_deploy_hooks(name, domains, params, directory=False, quiet=quiet)
    if not quiet:
        print(
            "\nSuccessfully received certificate.\n"
            f"Certificate is saved at: /etc/letsencrypt/live/{name}/fullchain.pem\n"
            f"Key is saved at:         /etc/letsencrypt/live/{name}/privkey.pem\n"
            f"This certificate expires on {_expiry(live_cert)}.\n"
            "These files will be updated when the certificate renews.\n"
            "Certbot has set up a scheduled task to automatically renew this certificate in the background.\n"
        )
    return 0


def renew(flags: set[str], values: dict[str, list[str]]) -> int:
    quiet = bool(flags & {"-q", "--quiet"})
    force = bool(flags & {"--force-renewal", "--renew-by-default"})
    folder = os.path.join(_letsencrypt(), "renewal")
    confs = sorted(f for f in os.listdir(folder) if f.endswith(".conf")) if os.path.isdir(folder) else []
    wanted = values.get("cert_name")
    renewed: list[str] = []
    skipped: list[str] = []
    failed: list[str] = []
    for conf in confs:
        name = conf[: -len(".conf")]
        if wanted and name not in wanted:
            continue
        fullchain = f"/etc/letsencrypt/live/{name}/fullchain.pem"
        if not quiet:
            print(f"Processing /etc/letsencrypt/renewal/{conf}")
        params = _read_renewal(os.path.join(folder, conf))
        cert = os.path.join(_letsencrypt(), "live", name, "cert.pem")
        if not force and not _due(cert):
            if not quiet:
                print("Certificate not yet due for renewal")
            skipped.append(f"{fullchain} expires on {_expiry(cert)}")
            continue
        domains = _cert_domains(cert)
        try:
            if params.get("authenticator") != "manual":
                raise CertbotError(
                    f"The requested {params.get('authenticator')} plugin does not appear to be installed"
                )
            _prepare_manual(params, noninteractive=True, validate=True)
            if not quiet:
                print(f"Renewing an existing certificate for {' and '.join(domains)}")
            authorize(domains, params, quiet=quiet)
            _write_lineage(name, domains, params)
            _run_deploy_hooks(name, domains, params, directory=True, quiet=quiet)
            renewed.append(fullchain)
        except CertbotError as exc:
            sys.stderr.write(f"Failed to renew certificate {name} with error: {exc}\n")
            failed.append(fullchain)
    if not quiet:
        if skipped:
            print("The following certificates are not due for renewal yet:")
            print("".join(f"  {line} (skipped)\n" for line in skipped), end="")
        if renewed and not failed:
            print("Congratulations, all renewals succeeded: ")
            print("".join(f"  {line} (success)\n" for line in renewed), end="")
        elif renewed:
            print("The following renewals succeeded:")
            print("".join(f"  {line} (success)\n" for line in renewed), end="")
        if not renewed and not failed:
            print("No renewals were attempted.")
    if failed:
        sys.stderr.write(
            ("All renewals failed. " if not renewed else "")
            + "The following certificates could not be renewed:\n"
            + "".join(f"  {line} (failure)\n" for line in failed)
            + f"{len(failed)} renew failure(s), 0 parse failure(s)\n"
        )
        return 1
    return 0


def certificates() -> int:
    folder = os.path.join(_letsencrypt(), "renewal")
    confs = sorted(f for f in os.listdir(folder) if f.endswith(".conf")) if os.path.isdir(folder) else []
    if not confs:
        print("No certificates found.")
        return 0
    print("Found the following certs:")
    for conf in confs:
        name = conf[: -len(".conf")]
        cert = os.path.join(_letsencrypt(), "live", name, "cert.pem")
        print(f"  Certificate Name: {name}")
        print(f"    Domains: {' '.join(_cert_domains(cert))}")
        print(f"    Expiry Date: {_expiry(cert)}")
        print(f"    Certificate Path: /etc/letsencrypt/live/{name}/fullchain.pem")
        print(f"    Private Key Path: /etc/letsencrypt/live/{name}/privkey.pem")
    return 0


def main(args: list[str]) -> int:
    try:
        verb, flags, values = parse(args)
        if verb == "certonly":
            return certonly(flags, values)
        if verb == "renew":
            return renew(flags, values)
        if verb == "certificates":
            return certificates()
        if verb == "run":
            raise CertbotError(
                "Certbot doesn't know how to automatically configure the web server on this system. However, it can "
                'still get a certificate for you. Please run "certbot certonly" to do so. You\'ll need to manually '
                "configure your web server to use the resulting certificate."
            )
        raise CertbotError(f"sandbox certbot: `certbot {verb}` is not emulated")
    except UsageError as exc:
        sys.stderr.write(f"{USAGE}certbot: error: {exc}\n")
        return 2
    except CertbotError as exc:
        sys.stderr.write(f"{exc}\n{ADVICE}\n")
        return 1
