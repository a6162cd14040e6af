"""matplotlib, an optional dependency, for the methods' plots."""


def pyplot():
    """`matplotlib.pyplot` on the Agg backend, or an ImportError saying
    how to install matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "Plotting needs matplotlib: pip install matplotlib (or "
            "pip install 'ekg_keras[plot]')."
        ) from error
    return plt
