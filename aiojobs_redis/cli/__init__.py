"""The `aiojobs-redis` command: one module per group of subcommands, sharing common.py."""
