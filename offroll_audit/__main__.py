from offroll_audit.cli import main

main()
