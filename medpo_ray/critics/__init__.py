"""Critics: judge a policy answer against the record and propose minimal span edits."""
