"""Intake worker processes: SMTP sessions on more than one core, one owner of everything else.

``owner.py`` runs in ``mailrelay serve`` (it starts, watches and stops the workers and answers their
requests); ``worker.py`` is the worker process; ``channel.py`` the frames between them;
``remote.py`` the worker's side of the budgets the owner keeps.
"""
