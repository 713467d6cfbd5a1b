"""``python -m services.publish``: run the publisher worker."""

from services.publish.entrypoints.faust_app import main

if __name__ == "__main__":
    main()
