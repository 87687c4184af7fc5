"""The `imgclf` command line: one thin module per subcommand that parses, calls the core and renders."""
