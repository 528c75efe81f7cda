"""The request core: one `Session` per request, admission, endings, streaming, moderation, modes."""
