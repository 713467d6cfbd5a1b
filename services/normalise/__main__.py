"""``python -m services.normalise``: run the normaliser worker (its outbox relay runs as a child process of its
own, ``python -m services.normalise.entrypoints.relay_process``, which loads none of the worker's modules)."""

if __name__ == "__main__":
    from services.normalise.entrypoints.kafka_worker import main

    main()
