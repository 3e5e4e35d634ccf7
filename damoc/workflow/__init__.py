"""Stage steps: what each pipeline component runs. They read and write plain paths, time the work,
and turn a candidate's failure into a recorded outcome instead of an exception that would sink the run."""
