"""Public datasets fetched from pinned GitHub archives (`cdbench data fetch|list`).

sources.py holds the table (repository, commit, archive checksum, members, target, licence);
download.py streams an archive; archive.py extracts members safely; layout.py turns upstream
files into the layout the loaders read; fetch.py installs atomically; inventory.py lists.
"""
