"""``python -m services.normalise``: run the normaliser worker."""

from services.normalise.entrypoints.kafka_worker import main

if __name__ == "__main__":
    main()
