# SPDX-License-Identifier: Apache-2.0
"""medkd's Streamlit app: ``medkd app`` or ``streamlit run streamlit_app/app.py``. Research use only.

Thin on purpose: the app lives in :mod:`medkd.app` (shared input, model and run widgets; one view per model kind,
:func:`medkd.app.views.register_view`), :mod:`medkd.io.upload` and :mod:`medkd.viz`.
"""

from medkd.app.main import main

main()
