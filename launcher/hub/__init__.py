"""`launch hub`: a web face over the runner and the run registry (runs, live curves, stop/clone/compare).

Modules: `app` (the factory), `api` (JSON routes), `pages` (Jinja pages), `auth` (token, CSRF, origin checks),
`stream` (server-sent events), `runs` (drafts, launch, clone, compare: what the routes call), `form` (the New run
form from the recipe schema), `external` (MLflow runs other scripts logged, listed read-only). Nothing here is
imported by the CLI until `launch hub` runs.
"""
