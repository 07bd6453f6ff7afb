"""Input and output files, above core only: strict JSON input (`jsoninput`), safe output folders and atomic files
(`outputs`), image decoding (`imageio`: DICOM, PNG, JPEG, TIFF) and weights bound to their JSON record
(`bound_files`)."""
