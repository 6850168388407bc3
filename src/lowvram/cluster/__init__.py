"""Past one machine: Ray Data workers for `lowvram batch --ray`, Ray Serve replicas for `lowvram serve --ray`.

Nothing here imports Ray at import time; Ray is an optional extra (`pip install "lowvram[ray]"`).
"""
