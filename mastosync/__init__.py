"""mastosync: copy a Mastodon instance's media between S3-compatible buckets.

The database says which objects exist; mastosync copies exactly those.
"""

__version__ = "0.1.0"
