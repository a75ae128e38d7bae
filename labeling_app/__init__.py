"""Stage 2, labelling: the Streamlit app in which people judge completions good or bad in the browser.

Run it with ``python -m labeling_app`` or ``streamlit run labeling_app/app.py``. The pages
render and collect input; all reads and writes go through ``db``.
"""
