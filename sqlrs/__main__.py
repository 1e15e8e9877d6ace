from sqlrs.entrypoints.cli.main import main

main()
