import re
import sys

name = "{{ cookiecutter.plugin_name }}"
if not re.fullmatch(r"[a-z][a-z0-9_-]{0,30}", name):
    sys.exit(
        f"plugin_name {name!r}: use lower-case letters, digits, '-' or '_', "
        "starting with a letter (it becomes the channel's and the entry point's name)"
    )
