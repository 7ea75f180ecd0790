"""``rlaif serve``: the direct scorer and the pairwise labeler as an HTTP reward service for RL trainers.

``validation`` checks request bodies, ``batching`` queues requests for the one thread that runs
the model, ``scoring`` is what that thread runs, ``app`` is the HTTP side (needs ``rlaif[serve]``).
The labeling core never imports this package.
"""
