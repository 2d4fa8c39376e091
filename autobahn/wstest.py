# Python 2.7: run Autobahn|Testsuite's wstest from the directory pip installed it into.
import os
import site
import sys

site.addsitedir(os.environ["AUTOBAHN_SITE"])
from autobahntestsuite.wstest import run

sys.argv[0] = "wstest"
sys.exit(run())
