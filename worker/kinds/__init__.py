"""The runners of the built-in job kinds (:mod:`core.kinds` names them)."""
