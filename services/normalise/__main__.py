"""``python -m services.normalise``: run the normaliser worker.

The import stays under the guard: the outbox relay's child process (entrypoints/relay_process.py, started with
multiprocessing's "spawn") imports this module again as ``__mp_main__``, and would otherwise load the whole
worker (shapely, numpy...) it never uses — 89 MB instead of ~70 MB resident.
"""

if __name__ == "__main__":
    from services.normalise.entrypoints.kafka_worker import main

    main()
