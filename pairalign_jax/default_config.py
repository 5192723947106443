"""The base configuration (the "base" model size): every key the library reads, with its default.

This is the one source of truth for config keys and defaults: `configs/default.py` re-exports it,
every other config starts from it and changes what it needs, `config_validation` rejects keys it
does not have, and `config_lib.upgrade` completes configs saved before a key existed. Every entry
can be overridden on the command line, e.g. ``--config.loss.contrast_weight=0``; that is how
ablations run. `pairalign_jax/config_validation.py` checks the result at start-up and names the
key at fault.

Choices that the paper leaves open are written down next to the entry that controls them;
docs/METHOD.md gathers them with the measurements behind them.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  # ---------------------------------------------------------------- run
  config.seed = 0
  config.batch_size = 32  # global batch (all hosts, all devices): pairs of views
  config.num_train_steps = 20_000
  config.log_every_steps = 50
  config.eval_every_steps = 5_000  # 0 = only at the end
  config.checkpoint_every_steps = 1_000
  config.max_nonfinite_steps = 20  # abort after this many skipped (non-finite) updates in a row
  # Fine-tuning (pairalign_jax/train.py docstring): start from another run's parameters; a workdir
  # (its newest checkpoint) or one step folder. '' = off. Optimizer state, data iterator and step
  # counter start fresh; the model keys that change parameter shapes must match the source's.
  # A workdir with a checkpoint of its own resumes from it instead.
  config.init_from = ''
  # Both default to True for fine-tuning a stage-2 model on a small corpus: the decoder's token ids
  # are (groups of) VQ codes, so a fresh codebook would give targets in another vocabulary than the
  # loaded decoder's (and a fresh one frozen from stage 1 on is never trained); the EMA teacher is
  # the smoothed model that makes the targets (and its decodes' EOS bias, which comes with it, the
  # target length), so the first fine-tuning targets are the source run's. With False the codebook
  # is freshly initialized, and the teacher starts as a copy of the loaded student.
  config.init_from_vq_stats = True
  config.init_from_teacher = True

  # ---------------------------------------------------------------- audio
  config.audio = ml_collections.ConfigDict()
  config.audio.sample_rate = 16_000
  config.audio.segment_seconds = 3.0  # 48 000 samples

  # ---------------------------------------------------------------- front end (log-mel in JAX)
  config.frontend = ml_collections.ConfigDict()
  config.frontend.n_mels = 80
  config.frontend.n_fft = 512
  config.frontend.win_length = 400  # 25 ms
  # 10 ms -> 300 frames per 3 s (librosa center=True, last frame dropped)
  config.frontend.hop_length = 160
  config.frontend.fmin = 0.0
  config.frontend.fmax = 8_000.0
  config.frontend.log_floor = 1e-5  # log(max(mel_power, floor))
  config.frontend.normalize = True  # per-utterance mean/variance over time, per band
  # Cepstral smoothing of each log-mel frame (frontend.cepstral_projection): 0 = off; K > 0 keeps
  # its first K DCT-II coefficients over the 80 bands, i.e. the spectral envelope (13, as an MFCC
  # keeps of 40 bands) without the pitch harmonics the bands resolve below about 1 kHz. The model
  # input, the reconstruction target and the log-mel k-means baseline all read the smoothed frames.
  # Measured (eSpeak NG validation, seed 0; docs/results.md): PairAlign 0.750 with 13, 0.751 off.
  config.frontend.cepstral_coeffs = 0
  config.frontend.specaugment = ml_collections.ConfigDict()
  config.frontend.specaugment.enabled = True  # train only
  config.frontend.specaugment.freq_masks = 2
  config.frontend.specaugment.freq_width = 8
  config.frontend.specaugment.time_masks = 2
  config.frontend.specaugment.time_width = 10
  # Vocal-tract-length perturbation (train only): each view's power spectrum is warped along
  # frequency by its own factor alpha (log-uniform in `alpha`; > 1 moves formants and harmonics up),
  # so the two views of a pair differ as two speakers' voices do (frontend.vtlp_warp). Adult
  # speakers' formant scales span about 0.85-1.2.
  config.frontend.vtlp = ml_collections.ConfigDict()
  config.frontend.vtlp.enabled = False
  config.frontend.vtlp.alpha = (0.87, 1.15)

  # ---------------------------------------------------------------- model
  config.model = ml_collections.ConfigDict()
  config.model.d_model = 256
  config.model.num_heads = 4
  config.model.mlp_dim = 1024
  config.model.enc_layers = 6
  config.model.dec_layers = 4
  config.model.subsample = 2  # conv subsampling: 2 (20 ms frames, default) or 4
  config.model.dropout_rate = 0.1
  config.model.attention_dropout_rate = 0.0
  config.model.codebook_size = 512  # K; vocabulary = K codes + BOS + EOS + PAD
  config.model.code_dim = 64  # VQ code space (l2-normalized)
  config.model.max_len = 128  # L: decoder steps; at most L-1 codes + EOS
  config.model.scan_layers = True  # nn.scan over layers
  config.model.remat = True  # nn.remat inside the scan (memory and, on CPU, speed)
  # What remat keeps for the backward pass: 'nothing' (recompute each layer's forward: least
  # memory), 'weight_matmuls' (keep projection/MLP outputs) or 'matmuls' (also attention).
  config.model.remat_policy = 'nothing'
  config.model.dtype = 'float32'  # activations: 'float32' or 'bfloat16' (bf16 is for accelerators)
  config.model.recon_channels = 128  # small conv decoder for the stage-0 mel reconstruction
  # Location-aware cross-attention: a learned bias over the offset (encoder frames, clipped to
  # +-this) between each frame and the previous token's time. 0 = off (the decoder then has to find
  # its place in the audio from the token prefix alone; in short runs it ignored H instead,
  # docs/METHOD.md §11).
  config.model.time_bias_frames = 16
  # The bias is this times its parameter, which starts as the prior bump divided by it: the
  # larger, the faster the bias can sharpen (Adam moves a parameter ~lr per step). At 1 the
  # tables of a small-corpus run were still the prior's 3-frame-wide bumps 600 steps into stage 1.
  config.model.time_bias_scale = 1.0
  # Encoder positions: 'sinusoidal' (any length) or 'learned' (a table of one segment's frames).
  config.model.enc_positions = 'sinusoidal'
  # Decoder-side encoder layers between H and the decoder's cross-attention, trained only by the
  # sequence terms (no dropout): with loss.sequence_losses_train_encoder=False the decoder can
  # still adapt H to its strings while the encoder, and so the VQ codes, keep what stage 0
  # learned. 0 = off.
  config.model.adapter_layers = 0
  # The decoder's cross-attention reads H plus a learned embedding of each frame's own VQ code
  # (docs/METHOD.md §6): the frame labels the targets are made from. False = H alone.
  config.model.decoder_reads_codes = False
  # How the decoder places each token in the audio, i.e. the time it feeds back as the next
  # token's input time (docs/METHOD.md §6): 'centroid' (a learned mix of its cross-attention
  # heads' centroids, smooth-L1 timing loss) or 'pointer' (its own distribution over the encoder
  # frames, cross entropy on the target token's frame; decoding feeds back the most likely frame).
  config.model.time_head = 'centroid'
  # Where each decoder layer's location bias is centred (docs/METHOD.md §6): 'input' (every layer
  # on the input token's time) or 'previous_layer' (the first on the input time, each later one
  # on the time the layer before it found; needs time_head='centroid' and scan_layers=False).
  config.model.location_anchor = 'input'

  # ---------------------------------------------------------------- VQ head
  config.vq = ml_collections.ConfigDict()
  # fast: a slow codebook lags the moving encoder in short runs (measured)
  config.vq.ema_decay = 0.9
  config.vq.epsilon = 1e-5
  # EMA count (frames per batch) below this -> re-seeded from batch vectors
  config.vq.dead_code_threshold = 1.0
  config.vq.reseed = True
  # Stop the codebook's EMA updates and re-seeding at stage 1: the decoder's targets are VQ codes,
  # and codes that keep changing identity are targets it cannot learn.
  config.vq.freeze_after_stage0 = True
  config.vq.diversity_temperature = 0.02  # soft assignment softmax(z.e / T) of the diversity term
  # 'pca_kmeans': at the start of stage 1 the VQ's projection becomes the top code_dim principal
  # directions of the encoder's frames and its codebook a k-means of the projected frames, fitted on
  # `refit_recordings` training recordings (pairalign_jax/vq_refit.py; needs
  # schedule.freeze_encoder='stage1'). For an encoder trained with loss.code_pred_targets='units',
  # whose frames a k-means reads far better than the VQ trained beside them (docs/results.md,
  # "Refitting the VQ stage to the encoder": eSpeak NG test split, seeds 0-2, PairAlign 0.966).
  config.vq.refit = 'none'
  config.vq.refit_recordings = 576

  # ---------------------------------------------------------------- targets (stage 1)
  config.targets = ml_collections.ConfigDict()
  # Codes mapped to this many groups of similar codes (spherical k-means of the frozen codebook,
  # pairalign_jax/code_groups.py) before collapsing: shorter AND more speaker-invariant targets.
  # 0 = targets are the raw codes (the first design; pruning those to the target rate destroyed
  # content, docs/METHOD.md §11). Measured on the synthetic corpus (targets scored as a tokenizer):
  # 16 groups + min_run_frames 2 -> 12.6 tokens/s at recall@1 0.97 (raw codes: 29 tokens/s, 0.95).
  config.targets.code_groups = 16
  # How many k-means groupings of the frozen codebook to make at the start of stage 1 (one from
  # farthest-point initial centres, the rest from random ones; pairalign_jax/code_group_choice.py):
  # the run keeps the one whose collapsed strings best tell its training recordings apart (two
  # augmentations of each of `group_choice_recordings` recordings; the margin between a view's
  # distance to the other recordings and to its own other view), among those at most
  # `group_choice_max_rate_ratio` times as long as the VQ stage's strings of the same views.
  # 1 = the farthest-point grouping, nothing chosen. Needs vq.freeze_after_stage0 and a stage 0
  # (a run without one, only with init_from, keeps its source's grouping).
  # `group_choice` = 'validation_recall' ranks the candidates instead by the recall@1 of their
  # strings on the validation split (its evaluation set, built as the reports build it): a choice
  # made on validation data, so the run's validation figures are no longer unbiased (report the
  # test split).
  config.targets.group_candidates = 1
  config.targets.group_choice = 'view_margin'
  config.targets.group_choice_recordings = 256
  config.targets.group_choice_max_rate_ratio = 0.45
  # Runs of a repeated code (group) shorter than this many encoder frames are merged into a
  # neighbour. -1 = derive from config.length.target_rate (sequences.min_run_frames_for_rate; 3 at
  # 12.7 tokens/s and 20 ms frames, which was measured to be too much pruning once codes are
  # grouped).
  config.targets.min_run_frames = 2
  # The time each target token carries (the location-aware decoder's input time for the next
  # token, and what its timing loss trains its own token times toward): 'centre' of the token's
  # run of frames, or its 'end' (the centre of the run's last frame: the next token starts one
  # frame later), so that the next token is the code one frame after the input time rather than
  # somewhere past the centre of a run of unknown length (docs/METHOD.md "Targets and code
  # groups").
  config.targets.time_anchor = 'centre'

  # ---------------------------------------------------------------- losses (weight 0 = ablated)
  config.loss = ml_collections.ConfigDict()
  config.loss.recon_weight = 1.0  # stage 0: mel reconstruction from quantized frames
  config.loss.commit_weight = 0.25  # stage 0: commitment
  config.loss.code_pred_weight = 0.5  # stage 0: view 2 frames predict view 1 codes
  # False: the code prediction (the one stage-0 term that reads both views frame by frame) stops
  # after stage 0, when the views stop being time-aligned (data.align_views_in_stage0; speed and
  # shift augmentations from stage 1). With True it goes on training the encoder to predict the
  # other view's codes at the wrong frames. Measured (small corpus, seed 0, True): 600 steps into
  # stage 1 the student encoder's code-group strings of validation audio are 0.95 (normalized
  # edit distance) from the frozen stage-1 teacher's, the decoder's targets (docs/METHOD.md §5.8);
  # 0.58 with False. But with False the VQ stage ended at recall@1 0.756 (0.948 with True, same
  # seed) and PairAlign at 0.840 (0.876): kept True.
  config.loss.code_pred_after_stage0 = True
  # What the code prediction predicts (pairalign_jax/units.py): 'vq', the other view's VQ codes
  # (the run's own, which the mel reconstruction trains to keep the speaker's spectrum), or
  # 'units', the other view's acoustic units: k-means (`unit_clusters`) of cepstral frames
  # (`unit_coeffs` DCT coefficients of the normalized log-mel and their deltas), fitted once at the
  # start of training on `unit_fit_recordings` training recordings and stored in 'vq_stats'.
  # Measured (eSpeak NG corpus, validation, 400 stage-0 steps, seed 0): a 64-cluster k-means of
  # the encoder's frames reads recall@1 0.98 with 'units' against 0.75 with 'vq' (docs/results.md).
  # With vq.refit='pca_kmeans' too (the full schedule, seeds 0-2, test): PairAlign 0.966 against
  # 0.880-0.914 without the two options. Off here; on in configs/small_corpus.py (and so
  # configs/espeak_small_corpus.py) since it was measured on the synthetic small corpus too.
  config.loss.code_pred_targets = 'vq'
  config.loss.unit_clusters = 64  # <= model.codebook_size (the code head predicts the unit ids)
  config.loss.unit_coeffs = 13
  config.loss.unit_fit_recordings = 576
  config.loss.diversity_weight = 0.0  # codebook usage: 1 - perplexity(mean soft assignment) / K
  config.loss.cross_tf_weight = 1.0  # -l(y1|H2) - l(y2|H1)
  # -l(y1|H1) - l(y2|H2): aligned rows, where the timing loss is exact
  config.loss.self_tf_weight = 1.0
  # fraction p of teacher-forced inputs replaced by random codes
  config.loss.prefix_corruption = 0.15
  config.loss.corruption_delete = 0.0  # fraction of inputs deleted (shifted left)
  config.loss.corruption_duplicate = 0.0  # fraction of inputs duplicated (shifted right)
  config.loss.antibypass_weight = 0.5
  config.loss.antibypass_margin = 0.5  # nats per token
  config.loss.contrast_weight = 1.0
  config.loss.contrast_temperature = 0.1
  config.loss.contrast_negatives = 0  # 0 = every in-batch condition; k > 0 = k sampled negatives
  # Rows scored per decoder call (objective._score_rows_chunked): 0 = every (target, condition)
  # row of the step in one call; C > 0 = at most C rows at a time (jax.lax.map over a
  # jax.checkpoint-ed chunk; steps with <= C rows make one call as with 0), which bounds the memory
  # of stage 2's ~B^2 contrast rows; the backward pass recomputes each chunk's forward. Same loss
  # and gradients (with dropout > 0, other random draws). Measured (CPU, XLA temp buffers of this
  # config's stage-2 step at batch 32, 1 216 rows): 16.7 GB with 0, 1.45 GB with 64; step time
  # (demo model, stage 2, batch 16, all negatives) 0.92-0.94x of the one-call step, base model at
  # batch 16 0.98-1.0x in CPU time (docs/METHOD.md §5.5).
  config.loss.score_chunk_rows = 64
  config.loss.length_weight = 0.1  # length head regression (|y| from pooled H)
  # Std (seconds) of Gaussian noise on the location-aware decoder's teacher-forced input times: in
  # decoding they are its own times, so it must not rely on exact anchors (model.time_bias_frames).
  config.loss.time_jitter_seconds = 0.04
  # Exposure bias in the time channel: this share of rows (a fixed count, drawn anew each step) is
  # trained on the decoder's own input times, from `own_time_passes` stop-gradient forward passes
  # run on those rows only (objective.own_time_rows, objective.own_input_times).
  # Measured (demo budget, synthetic): own-time error 0.34 -> 0.18 s, recall@1 0.52 -> 0.56; with
  # the head-mixed token times, drift 0.155 -> 0.110 s but recall@1 not better (0.72 without them,
  # 0.66 with; docs/results.md). Whether they pay at the full budget is still open.
  config.loss.own_time_prob = 0.5
  config.loss.own_time_passes = 3
  # Whether the sequence terms (stages 1-2) also train the encoder. Measured (small corpus,
  # validation split): with True the VQ stage's recall@1 falls from 0.939 (end of stage 0) to 0.864
  # (step 1 500) and 0.823 (end), and the code-group targets with it (0.892 -> 0.823), while the
  # encoder trains on the sequence terms against a codebook frozen after stage 0. False keeps the
  # encoder on the stage-0 terms only (whether that keeps the targets is not measured yet).
  config.loss.sequence_losses_train_encoder = True
  # Token times vs VQ run centres (stage 1) / teacher times (stage 2). The location-aware decoder
  # feeds its times back, so they must be exact: at 0.1 the timing loss stalled at ~0.04 s and the
  # decoder's own times drifted; 1.0 (demo budget): recall@1 0.41 -> 0.52.
  config.loss.timing_weight = 1.0
  config.loss.monotonic_weight = 0.1  # times must not go backwards
  config.loss.coverage_weight = 0.1  # token times must span the voiced region
  config.loss.max_gap_seconds = 0.4  # coverage: longest allowed gap between consecutive token times

  # ---------------------------------------------------------------- length control
  config.length = ml_collections.ConfigDict()
  config.length.target_rate = 12.7  # tokens per second (paper: 12.71)
  # EOS-bias step per token of mean-length error. 0 = no controller: the bias stays 0 and the
  # decoder writes the length it learned from its targets; with schedule.max_alpha = 0 stage 2 then
  # skips the teacher's decodes. configs/small_corpus.py sets 0: there a trained bias of +1.9 cut
  # strings short and cost 0.053 validation recall@1 (docs/METHOD.md §7).
  config.length.controller_gain = 0.05
  config.length.bias_limit = 8.0  # |EOS bias| clip
  # The controller never lowers the bias while fewer of the teacher's decodes than this end with
  # EOS: a mean length is otherwise met by short strings mixed with loops (losses.eos_bias_update).
  config.length.min_termination = 0.98
  # Stage-2 teacher decodes per step: 0 = every row of the batch (both views). N > 0 decodes N rows
  # (evenly strided), which is enough for the controller's mean length and cheaper (the decode is
  # autoregressive); only with schedule.max_alpha = 0, where the decodes feed nothing else.
  config.length.controller_decode_rows = 0

  # ---------------------------------------------------------------- stages and EMA teacher
  config.schedule = ml_collections.ConfigDict()
  config.schedule.stage1_start = 2_000  # decoder on VQ-derived targets
  config.schedule.stage2_start = 6_000  # EMA-teacher targets, contrast, anti-bypass, length control
  # alpha(step): VQ targets -> teacher targets over this many steps
  config.schedule.ramp_steps = 4_000
  # Largest share of teacher targets. Measured on the synthetic corpus: with alpha -> 1 the
  # teacher's decodes became one string for every input within ~150 steps (cross_tf -> 0, contrast
  # at chance); keeping half of the targets VQ-derived anchors the strings to the audio. At 0.5 the
  # synthetic headline still collapsed once stage 2 ran 1 200 steps (recall@1 0.90 -> 0.48), so
  # configs/synthetic.py sets 0 (teacher's VQ-derived strings only); untested on real speech.
  config.schedule.max_alpha = 0.5
  config.schedule.ema_decay = 0.999  # teacher <- decay * teacher + (1 - decay) * student
  # Teacher: copies the student in stage 0, frozen in stage 1 (targets = the stage-0 VQ tokenizer),
  # from stage 2 an EMA whose decay ramps from 0 to ema_decay over these steps.
  config.schedule.ema_warmup_steps = 1_000
  # 'stage1' / 'stage2': from that stage on, leave the encoder, the VQ codebook and the stage-0
  # heads (mel decoder, code head) as they are at its start: the stage-0 terms stop and nothing
  # else updates them (needs loss.sequence_losses_train_encoder=False). With 'never' the stage-0
  # terms go on training the encoder in stages 1-2, on views that are no longer time-aligned
  # (data.align_views_in_stage0), so the codes that the stage-2 teacher reads keep moving under the
  # decoder (docs/METHOD.md §5.8). Measured (small corpus, validation, seed 0): PairAlign recall@1
  # 0.690 with 'stage1' against 0.883 with 'never': the encoder of step 400 gives weaker
  # code-group targets (0.871) than one trained on (0.970). 'stage2' keeps the encoder that
  # stage 1 trained on, and stage 2's targets (the EMA teacher's codes) then stop moving: 0.747
  # (stage 1 to step 2 000, stage 2 to 2 600; the decoder stayed 0.12 below its targets).
  config.schedule.freeze_encoder = 'never'
  # The stage-1 teacher, whose VQ codes (code groups) are the decoder's targets: 'frozen' (the
  # stage-0 VQ tokenizer, as the paper's stage 1) or 'student' (a copy of the student after every
  # update, so the targets are the codes of the encoder the decoder reads; needs
  # loss.sequence_losses_train_encoder=False, else the encoder could bend its own targets toward
  # what the decoder writes). With the sequence terms off the encoder, the stage-0 terms go on
  # training it in stage 1, and a frozen teacher's targets drift away from its H (docs/METHOD.md
  # §5.8). Measured (small corpus, validation, seed 0, 600 steps into stage 1): the decoder scored
  # recall@1 0.415 with 'student' against 0.729 with 'frozen': it cannot follow moving targets.
  config.schedule.stage1_teacher = 'frozen'

  # ---------------------------------------------------------------- optimizer
  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 5e-4
  config.optim.warmup_steps = 500
  config.optim.end_learning_rate_factor = 0.1  # cosine decays to lr * factor
  config.optim.weight_decay = 0.01
  config.optim.grad_clip = 1.0
  # Clip the stage-0 modules' gradients (encoder, VQ, reconstruction and code heads) by their own
  # global norm, apart from the decoder's: with loss.sequence_losses_train_encoder=False the
  # encoder then trains the same whatever the decoder does (one norm couples them whenever it
  # clips; train.clip_stage0_modules_apart).
  config.optim.clip_stage0_apart = False
  config.optim.b1 = 0.9
  config.optim.b2 = 0.98

  # ---------------------------------------------------------------- sharding
  config.mesh = ml_collections.ConfigDict()
  config.mesh.shape = (-1, 1, 1)  # ('data', 'fsdp', 'tensor'); -1 = the remaining devices
  # logical axis name -> mesh axis (or None). Parameters and activations carry the logical names.
  config.mesh.logical_axis_rules = (
    ('batch', ('data', 'fsdp')),
    ('embed', 'fsdp'),
    ('mlp', 'tensor'),
    ('heads', 'tensor'),
    ('kv', None),
    ('vocab', 'tensor'),
    ('codebook', None),
    ('code', None),
    ('length', None),
    ('frames', None),
    ('layers', None),
    ('mel', None),
    ('channels', None),
  )

  # ---------------------------------------------------------------- data
  config.data = ml_collections.ConfigDict()
  config.data.source = 'synthetic'  # synthetic | librispeech | timit | folder | manifest
  config.data.path = ''  # root folder (librispeech/timit/folder) or manifest file
  config.data.eval_path = ''  # held-out tree/manifest; '' = the source's own held-out split
  config.data.index_cache_dir = ''  # '' = next to the data if writable, else the workdir
  config.data.worker_count = 0  # grain worker processes (0 = in the main process)
  config.data.prefetch_buffer_size = 4
  config.data.max_bad_fraction = 0.05  # stop with an error past this fraction of skipped files
  config.data.timit_exclude_sa = True
  config.data.shuffle = True
  config.data.bad_min_reads = 100  # max_bad_fraction is enforced only after this many reads
  config.data.read_threads = 4  # grain ReadOptions.num_threads per process
  # librispeech/folder/manifest without eval_path: share of speakers (crc32 hash) held out.
  config.data.heldout_fraction = 0.1
  # Stage 0 (steps < schedule.stage1_start): no speed perturbation or time shift, so the two views
  # stay time-aligned for the cross-view code prediction (docs/METHOD.md §8).
  config.data.align_views_in_stage0 = True
  # From stage 1 on, the probability that view 2 is ANOTHER SPEAKER reading the same content (from
  # the start of the utterance) instead of a second augmentation of the same recording. Needs a
  # source with parallel readings (the synthetic corpus). Our decision, not the paper's: same-
  # speaker views let the likelihood contrast separate items by voice instead of content.
  config.data.cross_speaker_views = 0.0

  config.data.synthetic = ml_collections.ConfigDict()
  config.data.synthetic.seed = 1234
  config.data.synthetic.num_train_speakers = 64
  config.data.synthetic.num_heldout_speakers = 16  # the test split (claims only)
  config.data.synthetic.num_train_sentences = 400
  config.data.synthetic.num_heldout_sentences = 100  # the test split
  config.data.synthetic.num_validation_speakers = 16  # the validation split (every choice)
  config.data.synthetic.num_validation_sentences = 100
  # virtual examples (speaker x sentence draws) per epoch
  config.data.synthetic.train_size = 100_000
  # True: the train split is the fixed grid of num_train_speakers x num_train_sentences recordings
  # (train_size is then ignored): a small corpus of fixed recordings, like a user's own.
  config.data.synthetic.train_grid = False

  config.data.augment = ml_collections.ConfigDict()
  config.data.augment.gain_prob = 0.8
  config.data.augment.gain_db = (-6.0, 6.0)
  config.data.augment.noise_prob = 0.5
  config.data.augment.snr_db = (10.0, 30.0)
  # of noisy draws, share that are pink/brown not white
  config.data.augment.coloured_noise_prob = 0.5
  config.data.augment.reverb_prob = 0.3
  config.data.augment.reverb_rt60 = (0.1, 0.5)
  config.data.augment.eq_prob = 0.3
  config.data.augment.eq_low_hz = (50.0, 300.0)
  config.data.augment.eq_high_hz = (3_000.0, 7_500.0)
  config.data.augment.pitch_prob = 0.3
  config.data.augment.pitch_semitones = (-1.0, 1.0)
  config.data.augment.speed_prob = 0.3
  config.data.augment.speed = (0.95, 1.05)
  config.data.augment.shift_prob = 0.5
  config.data.augment.max_shift_ms = 100.0

  # ---------------------------------------------------------------- evaluation
  config.eval = ml_collections.ConfigDict()
  # 'validation' (every choice is made here; what training runs report) or 'test' (claims only:
  # `python -m pairalign_jax.evaluate --config.eval.split=test`). 'heldout' = 'test' (old name).
  # 'train': the training recordings themselves (a fit diagnostic: a gap between 'train' and
  # 'validation' is overfitting; needs a training split whose contents have >= 2 readings, e.g.
  # configs/small_corpus.py's speaker x sentence grid).
  # Synthetic corpus: each split has its own speakers, words and sentences.
  config.eval.split = 'validation'
  config.eval.num_items = 100  # content items in the retrieval archive (-1 = all)
  config.eval.queries_per_item = 3  # other speakers / augmentations of each item
  # Every speaker is the archive once (-1), the other speakers' readings the queries; figures are
  # pooled over the rotations, with bootstrap intervals over content items.
  config.eval.archive_rotations = -1
  config.eval.batch_size = 64
  config.eval.sweep_shifts_ms = tuple(range(0, 101, 10))
  config.eval.sweep_items = 32
  config.eval.kmeans_clusters = -1  # -1 = same as codebook_size
  # k-means baseline (evaluation/baselines.py): frames pooled in groups of this many before
  # clustering; -1 = config.model.subsample (k-means frames at the encoder / VQ rate), 1 = raw
  # 10 ms frames.
  config.eval.kmeans_subsample = -1
  config.eval.kmeans_pool = 'mean'  # 'mean' (average the group) | 'stack' (concatenate it)
  config.eval.kmeans_train_segments = 2_000  # training-split segments whose frames fit k-means
  config.eval.kmeans_max_frames = 200_000  # at most this many frames are clustered (seeded draw)
  # Retrieval ties (evaluation/retrieval.py): 'expected' (random tie order, in expectation),
  # 'pessimistic' (true item after its ties) or 'optimistic'.
  config.eval.retrieval_ties = 'expected'
  config.eval.eos_bias = 0.0
  # PairAlign decoding in the evaluation (and its length calibration): 1 = greedy, K > 1 = beam
  # search keeping K prefixes per segment (decode.beam_decode); the final string is the beam with
  # the best log-probability / (tokens incl. EOS) ** beam_length_penalty.
  config.eval.beam_size = 1
  config.eval.beam_length_penalty = 0.0
  # Greedy decoding only: each step's time, fed back to the location bias, is snapped to the centre
  # of the run of the model's own code-group frames it falls in (decode.greedy_decode run_centres;
  # the decoder's own times otherwise drift, docs/METHOD.md §6). Also Tokenizer.score.
  config.eval.snap_times = False
  # Greedy decoding only: each chosen token is placed by content on the runs of the model's own
  # code-group frames (the strings its targets are made from): the run of the token's own group
  # after the previous token's run that lies nearest the decoder's time, within this many encoder
  # frames of it; the time fed back to the location bias is then that run's time, else the
  # decoder's own (decode.TokenRuns, sequences.align_to_runs). 0 = off (the decoder's own times).
  # Also Tokenizer.score. Measured (validation, docs/results.md "Placing each token on the audio's
  # own runs"): 2 frames +0.000 to +0.058 recall@1 on five checkpoints; 4 frames with a decoder
  # that reads its codes and was trained on exact times: 0.80-0.82 -> 0.909-0.928 (small corpus,
  # 3 seeds; configs/small_corpus.py sets 4).
  config.eval.align_frames = 0
  # With align_frames > 0: each token is also chosen among the codes of the runs it could be placed
  # on (those align_frames finds, and EOS), where there are any; elsewhere the decoder's own
  # choice (decode.TokenRuns.choose_from_runs, sequences.run_token_mask). False = the decoder's
  # own choice everywhere, only placed. Measured (validation, PairAlign recall@1 at align_frames
  # 4, docs/results.md "Choosing each token among the runs"): 0.928 -> 0.895 (small corpus, seed
  # 0), 0.897 -> 0.912 (24 groups, seed 2), 0.868 -> 0.870 (fine-tuned, seed 1): not kept.
  config.eval.choose_from_runs = False
  # With align_frames > 0: end each string (EOS) once a token has been placed on the audio's last
  # code-group run (decode.TokenRuns.end_after_last_run): a decoder that does not stop there repeats
  # a token at the last frame until max_len (small corpus, seed 1: 2% of validation strings; its
  # validation recall@1 0.908 -> 0.924, the other two seeds unchanged; configs/small_corpus.py
  # sets True).
  config.eval.end_at_last_run = False

  # ---------------------------------------------------------------- checkpoints
  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.max_to_keep = 3
  config.checkpoint.keep_period = 0  # 0 = off; else keep every checkpoint whose step % period == 0
  config.checkpoint.async_save = True

  return config
