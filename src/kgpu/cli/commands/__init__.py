"""One module per subcommand (or group); each defines ``register(app: typer.Typer) -> None``."""
