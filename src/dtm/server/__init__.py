"""The DTM server: HTTP API, transaction engine, recovery loop and stores."""
