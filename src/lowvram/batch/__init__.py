"""`lowvram batch`: a JSONL file of A1111 txt2img bodies run to PNGs, on this machine or a Ray cluster."""
