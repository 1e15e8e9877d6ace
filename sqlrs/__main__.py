from sqlrs.entrypoints.cli.fast import main

main()
