"""SMTP meaning for TCP byte streams: parser, records, tables, views and CLI."""
