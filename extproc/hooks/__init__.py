"""The hook API handlers implement, handler loading, and the chain that owns every calling rule."""
