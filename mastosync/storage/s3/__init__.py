"""S3 buckets: the one backend that speaks HTTP.

    bucket.py      Bucket: the calls mastosync makes (signed here, sent by transport.py)
    answers.py     what an answer says: errors classified, an object's headers
    addressing.py  where a bucket's objects are, and what a write sends
"""

from mastosync.storage.s3.addressing import bucket_url, upload_extra
from mastosync.storage.s3.answers import _retry_after, answer_error, classify
from mastosync.storage.s3.bucket import COPY_PART_MIN, MAX_COPY_OBJECT, MAX_PARTS, Bucket, CredentialsExpired

__all__ = ["COPY_PART_MIN", "MAX_COPY_OBJECT", "MAX_PARTS", "Bucket", "CredentialsExpired", "_retry_after",
           "answer_error", "bucket_url", "classify", "upload_extra"]
