"""Shared odds and ends every stage may import: config loading, paths, offline assets,
the IMDB corpus and prompts, and user-facing errors. Imports none of the stages."""
