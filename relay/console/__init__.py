"""The web console at ``/console/``: the API's data pages in a browser (see ``app.py``)."""
