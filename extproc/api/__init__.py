"""The wire shapes of the LLM APIs: codecs, SSE, multipart, views, and one module per API family."""
