"""``python -m services.normalise``: run the normaliser worker."""

from services.normalise.entrypoints.faust_app import main

if __name__ == "__main__":
    main()
