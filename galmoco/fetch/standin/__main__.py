"""``python -m galmoco.fetch.standin desaccess|legacysurvey --port N``: serve a stand-in by hand."""

from galmoco.fetch.standin import main

main()
