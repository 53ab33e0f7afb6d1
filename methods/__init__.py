"""PETL methods for video-language models, one file per method.

Depends only on torch and open_clip (so parameter counts, FLOPs and benchmarks run anywhere).
`methods.registry` holds the registry; importing it loads every method module.
"""
