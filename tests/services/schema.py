"""Mastodon's tables with files, with Mastodon 4.x column names, in two shapes.

"4.6" has media_attachments.thumbnail_storage_schema_version and no `imports` table
(dropped in 4.4); "4.2" lacks the column and still has `imports`, as databases older
than 4.4 do. `statuses` and `accounts.suspended_at` are there for what Mastodon keeps
private. Only the columns mastosync may read are created, plus a few it must ignore.
Column lists as in Mastodon's db/schema.rb.
"""

from __future__ import annotations

from typing import Any

import asyncpg

SHAPES = ("4.6", "4.2")
# The newest migration of each shape's release, as Rails records them in schema_migrations.
LAST_MIGRATION = {"4.6": "20260611150940", "4.2": "20230803112520"}


def schema_sql(shape: str = "4.6") -> str:
    thumb_schema = "thumbnail_storage_schema_version integer," if shape == "4.6" else ""
    imports = "" if shape == "4.6" else """
CREATE TABLE imports (
    id bigserial PRIMARY KEY,
    type integer NOT NULL,
    approved boolean DEFAULT false NOT NULL,
    created_at timestamp without time zone DEFAULT now() NOT NULL,
    updated_at timestamp without time zone DEFAULT now() NOT NULL,
    data_file_name character varying,
    data_content_type character varying,
    data_file_size integer,
    data_updated_at timestamp without time zone,
    account_id bigint NOT NULL,
    overwrite boolean DEFAULT false NOT NULL
);"""
    return f"""
CREATE TABLE media_attachments (
    id bigint PRIMARY KEY,
    status_id bigint,
    account_id bigint,
    remote_url character varying DEFAULT '' NOT NULL,
    type integer DEFAULT 0 NOT NULL,
    shortcode character varying,
    description text,
    file_file_name character varying,
    file_content_type character varying,
    file_file_size integer,
    file_updated_at timestamp without time zone,
    file_storage_schema_version integer,
    file_meta json,
    thumbnail_file_name character varying,
    thumbnail_content_type character varying,
    thumbnail_file_size integer,
    thumbnail_updated_at timestamp without time zone,
    {thumb_schema}
    thumbnail_remote_url character varying,
    created_at timestamp without time zone DEFAULT now() NOT NULL,
    updated_at timestamp without time zone DEFAULT now() NOT NULL
);
CREATE TABLE accounts (
    id bigint PRIMARY KEY,
    username character varying DEFAULT '' NOT NULL,
    domain character varying,
    suspended_at timestamp without time zone,
    avatar_file_name character varying,
    avatar_content_type character varying,
    avatar_file_size integer,
    avatar_updated_at timestamp without time zone,
    avatar_remote_url character varying,
    avatar_storage_schema_version integer,
    header_file_name character varying,
    header_content_type character varying,
    header_file_size integer,
    header_updated_at timestamp without time zone,
    header_remote_url character varying DEFAULT '' NOT NULL,
    header_storage_schema_version integer,
    created_at timestamp without time zone DEFAULT now() NOT NULL,
    updated_at timestamp without time zone DEFAULT now() NOT NULL
);
CREATE TABLE custom_emojis (
    id bigserial PRIMARY KEY,
    shortcode character varying DEFAULT '' NOT NULL,
    domain character varying,
    image_file_name character varying,
    image_content_type character varying,
    image_file_size integer,
    image_updated_at timestamp without time zone,
    image_remote_url character varying,
    image_storage_schema_version integer,
    created_at timestamp without time zone DEFAULT now() NOT NULL,
    updated_at timestamp without time zone DEFAULT now() NOT NULL
);
CREATE TABLE preview_cards (
    id bigserial PRIMARY KEY,
    url character varying DEFAULT '' NOT NULL,
    title character varying DEFAULT '' NOT NULL,
    image_file_name character varying,
    image_content_type character varying,
    image_file_size integer,
    image_updated_at timestamp without time zone,
    image_storage_schema_version integer,
    created_at timestamp without time zone DEFAULT now() NOT NULL,
    updated_at timestamp without time zone DEFAULT now() NOT NULL
);
CREATE TABLE statuses (
    id bigint PRIMARY KEY,
    account_id bigint NOT NULL,
    text text DEFAULT '' NOT NULL,
    deleted_at timestamp without time zone,
    created_at timestamp without time zone DEFAULT now() NOT NULL,
    updated_at timestamp without time zone DEFAULT now() NOT NULL
);
CREATE TABLE site_uploads (
    id bigserial PRIMARY KEY,
    var character varying DEFAULT '' NOT NULL,
    file_file_name character varying,
    file_content_type character varying,
    file_file_size integer,
    file_updated_at timestamp without time zone,
    meta json,
    blurhash character varying,
    created_at timestamp without time zone DEFAULT now() NOT NULL,
    updated_at timestamp without time zone DEFAULT now() NOT NULL
);
CREATE TABLE backups (
    id bigserial PRIMARY KEY,
    user_id bigint,
    dump_file_name character varying,
    dump_content_type character varying,
    dump_file_size bigint,
    dump_updated_at timestamp without time zone,
    processed boolean DEFAULT false NOT NULL,
    created_at timestamp without time zone DEFAULT now() NOT NULL,
    updated_at timestamp without time zone DEFAULT now() NOT NULL
);
CREATE TABLE preview_card_providers (
    id bigserial PRIMARY KEY,
    domain character varying DEFAULT '' NOT NULL,
    icon_file_name character varying,
    icon_content_type character varying,
    icon_file_size bigint,
    icon_updated_at timestamp without time zone,
    trendable boolean,
    created_at timestamp without time zone DEFAULT now() NOT NULL,
    updated_at timestamp without time zone DEFAULT now() NOT NULL
);
{imports}
CREATE TABLE schema_migrations (version character varying PRIMARY KEY);
INSERT INTO schema_migrations (version) VALUES ('20170101000000'), ('{LAST_MIGRATION[shape]}');
"""


async def insert_rows(conn: asyncpg.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    """Insert dict rows (each with its own set of columns) into `table`."""
    for row in rows:
        cols = list(row)
        placeholders = ", ".join(f"${i + 1}" for i in range(len(cols)))
        await conn.execute(
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({placeholders})", *row.values()
        )
