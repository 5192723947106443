"""Search a spoken archive: windowed token strings on disk, subsequence matching, STD metrics."""
