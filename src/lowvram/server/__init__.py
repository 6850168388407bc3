"""`lowvram serve`: the A1111 HTTP API and lowvram's own, on one long-lived Session per GPU."""
