"""`python -m service`: the server (service.entrypoints.server)."""

from service.entrypoints.server import main

if __name__ == "__main__":
    main()
