"""Layer 2: files. Images, records, output folders, colour conversions."""
