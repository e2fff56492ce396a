"""Dataset curation: datasheets, review queues of suspect photos, and the decisions a
person takes on them.

A shop's labelled photos are never clean: mislabels, the same garment photographed twice
(sometimes once in train and once in validation, which flatters every score), photos of
something else, files that do not open. `datasheet` measures a dataset and documents it;
`review` lists what a person should look at, each entry saying why and how sure;
`decisions` records what the person decided and writes a cleaned CSV. The user's photos
are only ever read.
"""
