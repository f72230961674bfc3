"""The training stage, split by job (nothing here imports TensorFlow until a run starts it):

    runtime     TensorFlow start-up, threads, devices (Placement), precision, determinism, seeds
    feeds       tf.data feeds of a Split: epochs of batches, the row gatherer, steps per epoch
    loop        the loop plan (LoopPlan): Keras' loop or an XLA-compiled epoch, steps per call
    compile     build the registered model, compile it: targets, metrics, optimizer, class weights
    callbacks   kexp's Keras callbacks, and FitCallbacks: the set a fit uses, by name
    checkpoint  resumable state at an epoch's end, on disk
    signals     SIGTERM / SIGUSR1 / Ctrl-C become Interrupted at a batch boundary
    scoring     the final model's metrics per part from one prediction pass, the class report
    session     the typed values the stages hand each other
    fit         one member: fit -> score
    record      config.yaml, env.json, metrics.json, model.keras of the run and its members
    experiment  run_experiment / resume_experiment: open -> for each member: data -> model -> fit -> score -> record -> finish
"""
