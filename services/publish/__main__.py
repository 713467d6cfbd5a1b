"""``python -m services.publish``: run the publisher worker."""

from services.publish.entrypoints.kafka_worker import main

if __name__ == "__main__":
    main()
