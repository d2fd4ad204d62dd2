"""``python -m healthcheck [OPTIONS]`` serves the sidecar; ``python -m healthcheck check`` is the
HEALTHCHECK probe. Options: ``python -m healthcheck --help``."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def serve(argv: Sequence[str]) -> int:
    import logging

    import uvicorn

    from healthcheck.access import exposure
    from healthcheck.app import Sidecar, build_app
    from healthcheck.config import SettingsError, parse_settings
    from healthcheck.redact import Redactor, install_log_redaction
    from healthcheck.server import uvicorn_config

    try:
        settings = parse_settings(argv)
        api_key = settings.resolve_api_key()
    except SettingsError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 2
    refusal, warning = exposure(settings, api_key)
    if refusal:
        print(f"healthcheck: {refusal}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per probe call is noise
    config = uvicorn_config(build_app(Sidecar(settings, api_key=api_key)), settings)
    # uvicorn.Config has installed uvicorn's handlers by now: every handler redacts, ours included.
    install_log_redaction(Redactor([api_key]))
    logging.getLogger("healthcheck").info("settings: %s", settings.redacted())
    if warning:
        logging.getLogger("healthcheck").warning("%s", warning)
    elif api_key:
        logging.getLogger("healthcheck").info(
            "API key required on /metrics, / and the detail of /readyz (Authorization: Bearer)"
        )
    uvicorn.Server(config).run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["check"]:
        from healthcheck.check import main as check_main

        return check_main(argv[1:])
    return serve(argv)


if __name__ == "__main__":
    sys.exit(main())
