"""Stage 1, the base policy: the language model that RLHF will change.

- ``loading``: any causal LM by folder or hub name (:func:`load_policy`, :func:`resolve_policy`);
- ``pretrain``: pretraining the small GPT-2 from scratch on IMDB (the teaching path);
- ``tokenizer``: GPT-2's BPE from a pip package, or a small BPE trained on IMDB;
- ``generate``: sampling completions into the labelling queue (:func:`fill_queue`);
- ``registry``: recording policies as model versions in the database.

``python -m base_policy pretrain|generate`` (``make base-model``, ``make generate``). Importing the
package is cheap: torch and transformers load when a submodule is used.
"""
