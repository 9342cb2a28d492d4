"""The HTTP search service behind `clipline serve`.

    app.py             the FastAPI app and its routes (`create_app`)
    registry.py        indices served by name, each an atomically swapped snapshot
    backend.py         the real snapshot: an index dir's retrievers plus rows added while serving
    config.py          the service's limits and switches (`ServeConfig`, `ServeLimits`)
    guards.py          request guards: body size, API key, loopback check
    error_responses.py how errors become HTTP answers
    api_schemas.py     request and response bodies (the OpenAPI spec)
    query_parsing.py   a search request -> a checked query
    add_request.py     an add request -> rows for a snapshot
    text_batcher.py    micro-batching of concurrent text queries
    shard_images.py    a result's stored image read back from its shard
    interpreter.py     the loaded objects frozen out of the garbage collector's scans
    static/            the web page
"""
