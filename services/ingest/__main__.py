"""``python -m services.ingest``: run the ingest service."""

from services.ingest.entrypoints.http_app import main

if __name__ == "__main__":
    main()
