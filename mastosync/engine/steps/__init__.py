"""The per-object step of each command: a job in, its outcome out (nothing else touched).

    copy.CopyStep     run: copy the object (or its fallback), say how it went
    check.CheckStep   verify: compare the object's presence and size on both sides

What an outcome changes (counters, the report, the resume state) is engine/books.py's job.
"""
