"""Exporting a frozen dataset version: rows streamed from Postgres as Arrow record batches, shaped
into a training format, written into a container (JSONL, Parquet, or an HF `save_to_disk` folder)
with a dataset card beside the data. Memory stays bounded by one batch."""
