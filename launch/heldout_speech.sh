#!/usr/bin/env bash
# The held-out-speech runs of docs/results.md, one after the other, each evaluated on the
# validation split (the run's own final report, WORKDIR/report.md: where settings are chosen) and
# on the test split (WORKDIR/test/report.md: what is claimed).
#
#   launch/heldout_speech.sh ROOT [RUN ...]
#
# RUN names (default: the runs of the settings chosen so far, in this order: small_unitsrefit_s0-2,
# small_ft_unitsrefit_s0, aug_only_s0-2, synthetic_s0):
#   aug_only_s{0,1,2}     configs/synthetic.py with augmentation-only views (no parallel readings)
#   aug_only_aligned_s{0,1,2} configs/synthetic_aug_only.py: aug_only with configs/small_corpus.py's
#                         training and decoding settings (sequence terms off the encoder, no length
#                         controller, the encoder frozen from stage 1, a decoder that reads its
#                         codes, exact input times, eval.align_frames=4)
#   aug_only_groupchoice_s{0,1,2} configs/synthetic_aug_only.py with the code grouping chosen (16
#                         candidates, 576 recordings) and strings ending at the audio's last run,
#                         as configs/small_corpus.py does
#   aug_only_recallchoice_s{0,1,2} aug_only_groupchoice with the 16 candidates ranked by their
#                         strings' recall@1 on the validation split
#                         (targets.group_choice=validation_recall) instead of the view margin
#   aug_only_recallchoice24_s{0,1,2} the same with 24 code groups (targets.code_groups=24)
#   aug_only_unitsrefit_s{0,1,2} configs/synthetic_aug_only.py with acoustic-unit targets and the
#                         VQ refit (loss.code_pred_targets=units, vq.refit=pca_kmeans)
#   aug_only_unitsrefit_endatlastrun_s{0,1,2} the same, its strings ending at the audio's last
#                         code-group run (eval.end_at_last_run=True; the training is the same)
#   espeak_s{0,1,2}       configs/espeak_small_corpus.py: configs/small_corpus.py on the eSpeak NG
#                         corpus (speech it was not developed on; ESPEAK_DIR, default data/espeak,
#                         built first if missing)
#   espeak_cep13_s{0,1,2} espeak with each log-mel frame smoothed to 13 cepstral coefficients
#                         (frontend.cepstral_coeffs: the envelope an MFCC keeps, no pitch harmonics)
#   espeak_unitsrefit_s{0,1,2} espeak with acoustic-unit targets for the stage-0 code prediction
#                         (loss.code_pred_targets=units) and the VQ refitted to the encoder at the
#                         start of stage 1 (vq.refit=pca_kmeans)
#   espeak_groups24_s{0,1,2} espeak_small_corpus.py as it is now (unit targets, the VQ refit) with 24
#                         code groups instead of 16 (targets.code_groups=24)
#   espeak_ft_unitsrefit_s{0,1,2} espeak_unitsrefit started from ROOT/aug_only_recallchoice_s{0,1,2}
#                         (FT_FROM=RUN starts from ROOT/RUN instead)
#   small_unitsrefit_s{0,1,2} configs/small_corpus.py (synthetic) with the same two options (its
#                         defaults since 2026-12-07: configs/small_corpus.py as it is now)
#   small_ft_unitsrefit_s{0,1,2} small_unitsrefit started from ROOT/aug_only_recallchoice_s{0,1,2}
#                         (setting (d); FT_FROM=RUN starts from ROOT/RUN instead)
#   espeak_ft_s{0,1,2}    the same started from ROOT/aug_only_recallchoice_s{0,1,2} (setting (d)
#                         on eSpeak NG speech; FT_FROM=RUN starts from ROOT/RUN instead)
#   small_corpus_s{0,1,2} configs/small_corpus.py as it was on 2026-12-06 (VQ-code targets, the
#                         stage-0 VQ; the encoder frozen from stage 1, a
#                         decoder that reads its codes, trained on exact input times and decoded
#                         with eval.align_frames=4 and eval.end_at_last_run, its code grouping
#                         chosen by the training views' margin; the same training as
#                         small_groupchoice below; before 2026-12-06 the farthest-point grouping:
#                         small_frozenenc_readcodes_exacttimes below)
#   small_groups24_s{0,1,2} small_corpus with 24 code groups instead of 16 (targets.code_groups)
#   small_groupchoice_s{0,1,2} small_corpus with its 16 code groups chosen among 16 k-means
#                         groupings by the view margin of all 576 training recordings
#                         (targets.group_candidates=16, targets.group_choice_recordings=576;
#                         what configs/small_corpus.py does since 2026-12-06), decoded without
#                         eval.end_at_last_run
#   small_corpus_ft_aligned_s{0,1,2} configs/small_corpus.py of 2026-12-06 started from the final
#                         parameters of ROOT/aug_only_aligned_s{0,1,2}, the same seed (setting (d))
#   small_corpus_ft_s0    small_corpus started from the final parameters of ROOT/aug_only_s0
#                         (config.init_from; its whole schedule; FT_FROM=aug_only_s1 starts from
#                         that run instead)
#   small_nolenctl_s{0,1,2} configs/small_corpus.py as it was before (sequence terms off the
#                         encoder, no EOS-bias length controller; the encoder trained in stage 1,
#                         jittered and own input times, the decoder's own times fed back)
#   small_s{0,1,2}        configs/small_corpus.py as first configured (9 speakers x 64 sentences,
#                         VTLP; the sequence terms train the encoder; the length controller on)
#   small_novtlp_s0       small_s without VTLP (the validation-split comparison)
#   small_encfix_s{0,1,2} small_s with loss.sequence_losses_train_encoder=False
#   small_adapter_s{0,1,2} small_encfix with model.adapter_layers=2 (decoder-side encoder layers)
#   small_longstage1_s{0,1,2} small_encfix with stage 1 twice as long (3 000 steps, stage 2 from 2 400)
#   small_frozenenc_s{0,1,2} small_encfix with schedule.freeze_encoder=stage1 (the
#                         encoder, VQ and stage-0 heads keep their stage-0 values from stage 1 on)
#   small_longstage0_s{0,1,2} small_frozenenc with stage 0 five times as long (2 000 steps; stage 1
#                         2 000-3 000, stage 2 3 000-3 600)
#   small_stage1student_s{0,1,2} small_nolenctl with stage-1 targets read through the student's
#                         own encoder (schedule.stage1_teacher=student), not the stage-0 one
#   small_dropout_s{0,1,2} small_nolenctl with dropout 0.1 in the encoder and decoder blocks
#                         (model.dropout_rate; synthetic.py has 0)
#   small_dec4_s{0,1,2}   small_nolenctl with 4 decoder layers instead of 2 (model.dec_layers)
#   small_longstage1_nolenctl_s{0,1,2} small_nolenctl with stage 1 twice as long (3 000 steps,
#                         stage 2 from 2 400): small_longstage1 without the length controller
#   small_jitter10ms_s{0,1,2} small_longstage1_nolenctl with the teacher-forced input times
#                         jittered by 0.01 s instead of 0.04 s (loss.time_jitter_seconds)
#   small_ownpasses8_s{0,1,2} small_longstage1_nolenctl with 8 own-time passes instead of 3
#                         (loss.own_time_passes: the drift of the decoder's own token times that
#                         training shows it, against the whole string's in greedy decoding)
#   small_frozenstage2_s{0,1,2} small_nolenctl with stage 1 to step 2 000 and the encoder, VQ and
#                         stage-0 heads frozen in stage 2 (2 000-2 600; schedule.freeze_encoder=
#                         stage2): the stage-2 targets stop moving once they match the student's H
#   small_nocodepred_s{0,1,2} small_nolenctl with the code prediction in stage 0 only
#                         (loss.code_pred_after_stage0=False: it reads the two views frame by
#                         frame, and from stage 1 they are no longer time-aligned)
#   small_readcodes_s{0,1,2} small_nolenctl with the decoder reading H plus an embedding of each
#                         frame's own VQ code (model.decoder_reads_codes)
#   small_readcodes_student_s{0,1,2} small_readcodes with the stage-1 targets read through the
#                         student's own encoder (schedule.stage1_teacher=student): the codes the
#                         decoder reads and the targets it writes are then made by one encoder
#   small_readcodes_student_jitter10ms_s{0,1,2} small_readcodes_student with the teacher-forced
#                         input times jittered by 0.01 s instead of 0.04 s
#   small_readcodes_student_exacttimes_s{0,1,2} small_readcodes_student with no input-time jitter
#                         and no own-time rows (every row is fed the targets' own times)
#   small_exacttimes_s{0,1,2} small_nolenctl with no input-time jitter and no own-time rows
#                         (small_readcodes_student_exacttimes without its two model changes)
#   small_endtimes_s{0,1,2} small_nolenctl with each target token's time at the end of its run, not
#                         its centre (targets.time_anchor=end): the decoder's input time is then
#                         where the next token starts
#   small_pointer_s{0,1,2} small_endtimes with the pointer time head (model.time_head=pointer)
#   small_clipapart_s{0,1,2} small_nolenctl with the stage-0 modules' gradients clipped apart
#                         (optim.clip_stage0_apart): its encoder trains as the stage-0 terms alone
#                         would have it
#   small_sharp_s{0,1,2}  small_nolenctl with a location bias that can sharpen 10x faster
#                         (model.time_bias_scale=10)
#   small_pointer_sharp_s{0,1,2} small_pointer with model.time_bias_scale=10
#   small_frozenenc_nolenctl_s{0,1,2}   configs/small_corpus.py with the encoder frozen from stage 1
#                                       (small_frozenenc without the length controller: the same
#                                       computation up to stage 2)
#   small_frozenenc_nocorrupt_s{0,1,2}  the encoder frozen from stage 1, no prefix corruption
#   small_frozenenc_exacttimes_s{0,1,2} the encoder frozen from stage 1, exact input times
#                                       (no jitter, no own-time rows)
#   small_frozenenc_selftf_s{0,1,2}     the encoder frozen from stage 1, no cross rows
#   small_frozenenc_readcodes_exacttimes_s{0,1,2} the encoder frozen from stage 1, the decoder
#                                       reading its codes (model.decoder_reads_codes), exact
#                                       input times (for decoding with eval.align_frames)
#   small_ft_s0           small_nolenctl fine-tuned from ROOT/aug_only_s0 (stage 2 only, 600 steps;
#                         FT_FROM=aug_only_s1 fine-tunes from that run instead)
#   synthetic_s0          configs/synthetic.py as it is (parallel readings)
# A run whose WORKDIR/test/report.json exists is skipped; an interrupted one resumes.
# VALIDATION_ONLY=1: no test-split evaluation (settings being compared, not yet chosen).
set -euo pipefail
root=${1:?usage: launch/heldout_speech.sh ROOT [RUN ...]}
shift
runs=("$@")
if [ ${#runs[@]} -eq 0 ]; then
  runs=(small_unitsrefit_s0 small_unitsrefit_s1 small_unitsrefit_s2 small_ft_unitsrefit_s0
        aug_only_s0 aug_only_s1 aug_only_s2 synthetic_s0)
fi
cd "$(dirname "$0")/.."
mkdir -p "$root"

run() {   # NAME CONFIG [overrides...]: train (validation report), then the test report
  local name=$1 config=$2
  shift 2
  # configs/small_corpus.py chooses its code grouping (targets.group_candidates=16) and ends each
  # string at the audio's last run (eval.end_at_last_run) since 2026-12-06; every small_* run from
  # before keeps the farthest-point grouping it was trained with and its decoding.
  case "$name" in
    small_corpus_s* | small_corpus_ft_aligned_s* | small_unitsrefit_s* | small_ft_unitsrefit_s*) ;;
    small_groupchoice_s*) set -- "$@" --config.eval.end_at_last_run=False ;;
    small_*) set -- "$@" --config.targets.group_candidates=1 --config.eval.end_at_last_run=False ;;
  esac
  # Since 2026-12-07 configs/small_corpus.py (and so espeak_small_corpus.py) trains stage 0 on
  # acoustic-unit targets and refits the VQ stage at stage 1; every run from before keeps the
  # VQ-code targets and the stage-0 VQ it was trained with.
  case "$name" in
    small_unitsrefit_s* | small_ft_unitsrefit_s* | espeak_unitsrefit_s* | espeak_ft_unitsrefit_s* | \
      espeak_groups24_s*) ;;
    small_* | espeak_*) set -- "$@" --config.loss.code_pred_targets=vq --config.vq.refit=none ;;
  esac
  local workdir="$root/$name"
  if [ -f "$workdir/test/report.json" ]; then
    echo "$name: done, skipped"
    return
  fi
  echo "$name: training ($(date -u +%H:%M))"
  # Appended: a resumed run keeps the log of its earlier part.
  local log="$root/$name.log" before=0
  [ -f "$log" ] && before=$(wc -l <"$log")
  python -m pairalign_jax.main --config="$config" --workdir="$workdir" "$@" >>"$log" 2>&1
  # Stopped early (SIGTERM: a preemption checkpoint; main exits 0): no test-split evaluation.
  if [ ! -f "$workdir/report.json" ] || tail -n +$((before + 1)) "$log" | grep -q 'Preemption requested'; then
    echo "$name: stopped before its final report; run again to resume"
    return
  fi
  if [ "${VALIDATION_ONLY:-0}" = 1 ]; then
    return
  fi
  echo "$name: test-split evaluation ($(date -u +%H:%M))"
  python -m pairalign_jax.evaluate --checkpoint="$workdir" --config="$config" "$@" \
      --config.eval.split=test --outdir="$workdir/test" >>"$root/$name.log" 2>&1
}

aug_only=(--config.data.cross_speaker_views=0 --config.data.augment.pitch_prob=0.3)
# The eSpeak NG corpus (pairalign_jax/data/espeak_corpus.py), built on first use.
espeak_dir=${ESPEAK_DIR:-$PWD/data/espeak}
espeak_data=(--config.data.path="$espeak_dir/train.tsv" --config.data.eval_path="$espeak_dir/heldout.tsv")
espeak_corpus() {
  if [ ! -f "$espeak_dir/heldout.tsv" ]; then
    python -m pairalign_jax.data.espeak_corpus --out="$espeak_dir"
  fi
}
# The code grouping chosen among 16 by the validation split's recall@1, strings ending at the last run.
recall_choice=(--config.targets.group_candidates=16 --config.targets.group_choice=validation_recall
               --config.eval.end_at_last_run=True)
# Every small_* run below but small_corpus restores the configs/small_corpus.py it was trained
# with, so that its figures reproduce: nolenctl = the config before the frozen encoder and the
# codes-reading, aligned decoder; first_small and length_ctl = before the two settings chosen
# before that.
nolenctl=(--config.schedule.freeze_encoder=never --config.model.decoder_reads_codes=False
          --config.loss.time_jitter_seconds=0.04 --config.loss.own_time_prob=0.5
          --config.eval.align_frames=0)
# Acoustic-unit targets for the stage-0 code prediction, the VQ refitted to the encoder at stage 1.
units_refit=(--config.loss.code_pred_targets=units --config.vq.refit=pca_kmeans)
length_ctl=(--config.length.controller_gain=0.05)
first_small=(--config.loss.sequence_losses_train_encoder=True "${length_ctl[@]}")
for name in "${runs[@]}"; do
  case "$name" in
    aug_only_aligned_s*) run "$name" configs/synthetic_aug_only.py \
                             --config.seed="${name#aug_only_aligned_s}" ;;
    aug_only_groupchoice_s*) run "$name" configs/synthetic_aug_only.py \
                                 --config.targets.group_candidates=16 \
                                 --config.targets.group_choice_recordings=576 \
                                 --config.eval.end_at_last_run=True \
                                 --config.seed="${name#aug_only_groupchoice_s}" ;;
    aug_only_recallchoice24_s*) run "$name" configs/synthetic_aug_only.py "${recall_choice[@]}" \
                                    --config.targets.code_groups=24 \
                                    --config.seed="${name#aug_only_recallchoice24_s}" ;;
    aug_only_unitsrefit_endatlastrun_s*) run "$name" configs/synthetic_aug_only.py "${units_refit[@]}" \
                                            --config.eval.end_at_last_run=True \
                                            --config.seed="${name#aug_only_unitsrefit_endatlastrun_s}" ;;
    aug_only_unitsrefit_s*) run "$name" configs/synthetic_aug_only.py "${units_refit[@]}" \
                                --config.seed="${name#aug_only_unitsrefit_s}" ;;
    aug_only_recallchoice_s*) run "$name" configs/synthetic_aug_only.py "${recall_choice[@]}" \
                                  --config.seed="${name#aug_only_recallchoice_s}" ;;
    aug_only_s*) run "$name" configs/synthetic.py "${aug_only[@]}" --config.seed="${name#aug_only_s}" ;;
    espeak_ft_s*) espeak_corpus
                  run "$name" configs/espeak_small_corpus.py "${espeak_data[@]}" \
                      --config.seed="${name#espeak_ft_s}" \
                      --config.init_from="$root/${FT_FROM:-aug_only_recallchoice_s${name#espeak_ft_s}}" ;;
    espeak_ft_unitsrefit_s*) espeak_corpus
                             run "$name" configs/espeak_small_corpus.py "${espeak_data[@]}" \
                                 "${units_refit[@]}" --config.seed="${name#espeak_ft_unitsrefit_s}" \
                                 --config.init_from="$root/${FT_FROM:-aug_only_recallchoice_s${name#espeak_ft_unitsrefit_s}}" ;;
    small_unitsrefit_s*) run "$name" configs/small_corpus.py "${units_refit[@]}" \
                             --config.seed="${name#small_unitsrefit_s}" ;;
    small_ft_unitsrefit_s*) run "$name" configs/small_corpus.py "${units_refit[@]}" \
                                --config.seed="${name#small_ft_unitsrefit_s}" \
                                --config.init_from="$root/${FT_FROM:-aug_only_recallchoice_s${name#small_ft_unitsrefit_s}}" ;;
    espeak_groups24_s*) espeak_corpus
                        run "$name" configs/espeak_small_corpus.py "${espeak_data[@]}" \
                            --config.targets.code_groups=24 --config.seed="${name#espeak_groups24_s}" ;;
    espeak_unitsrefit_s*) espeak_corpus
                          run "$name" configs/espeak_small_corpus.py "${espeak_data[@]}" \
                              "${units_refit[@]}" --config.seed="${name#espeak_unitsrefit_s}" ;;
    espeak_cep13_s*) espeak_corpus
                     run "$name" configs/espeak_small_corpus.py "${espeak_data[@]}" \
                         --config.frontend.cepstral_coeffs=13 --config.seed="${name#espeak_cep13_s}" ;;
    espeak_s*) espeak_corpus
               run "$name" configs/espeak_small_corpus.py "${espeak_data[@]}" --config.seed="${name#espeak_s}" ;;
    small_corpus_s*) run "$name" configs/small_corpus.py --config.seed="${name#small_corpus_s}" ;;
    small_groupchoice_s*) run "$name" configs/small_corpus.py --config.targets.group_candidates=16 \
                           --config.targets.group_choice_recordings=576 \
                           --config.seed="${name#small_groupchoice_s}" ;;
    small_groups24_s*) run "$name" configs/small_corpus.py --config.targets.code_groups=24 \
                           --config.seed="${name#small_groups24_s}" ;;
    small_corpus_ft_aligned_s*) run "$name" configs/small_corpus.py \
                                    --config.seed="${name#small_corpus_ft_aligned_s}" \
                                    --config.init_from="$root/aug_only_aligned_s${name#small_corpus_ft_aligned_s}" ;;
    small_corpus_ft_s*) run "$name" configs/small_corpus.py --config.seed="${name#small_corpus_ft_s}" \
                            --config.init_from="$root/${FT_FROM:-aug_only_s0}" ;;
    small_nolenctl_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" --config.seed="${name#small_nolenctl_s}" ;;
    small_stage1student_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" \
                                --config.schedule.stage1_teacher=student \
                                --config.seed="${name#small_stage1student_s}" ;;
    small_dropout_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" --config.model.dropout_rate=0.1 \
                          --config.seed="${name#small_dropout_s}" ;;
    small_dec4_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" --config.model.dec_layers=4 \
                       --config.seed="${name#small_dec4_s}" ;;
    small_novtlp_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" "${first_small[@]}" \
                         --config.frontend.vtlp.enabled=False --config.seed="${name#small_novtlp_s}" ;;
    small_encfix_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" "${length_ctl[@]}" \
                         --config.seed="${name#small_encfix_s}" ;;
    small_adapter_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" "${length_ctl[@]}" \
                          --config.model.adapter_layers=2 --config.seed="${name#small_adapter_s}" ;;
    small_longstage1_nolenctl_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" \
                                      --config.num_train_steps=3000 --config.schedule.stage2_start=2400 \
                                      --config.seed="${name#small_longstage1_nolenctl_s}" ;;
    small_jitter10ms_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" \
                             --config.num_train_steps=3000 --config.schedule.stage2_start=2400 \
                             --config.loss.time_jitter_seconds=0.01 \
                             --config.seed="${name#small_jitter10ms_s}" ;;
    small_ownpasses8_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" \
                             --config.num_train_steps=3000 --config.schedule.stage2_start=2400 \
                             --config.loss.own_time_passes=8 \
                             --config.seed="${name#small_ownpasses8_s}" ;;
    small_frozenstage2_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" \
                               --config.num_train_steps=2600 --config.schedule.stage2_start=2000 \
                               --config.schedule.freeze_encoder=stage2 \
                               --config.checkpoint.keep_period=250 \
                               --config.seed="${name#small_frozenstage2_s}" ;;
    small_nocodepred_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" --config.loss.code_pred_after_stage0=False \
                            --config.seed="${name#small_nocodepred_s}" ;;
    small_readcodes_student_jitter10ms_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" \
                                             --config.model.decoder_reads_codes=True \
                                             --config.schedule.stage1_teacher=student \
                                             --config.loss.time_jitter_seconds=0.01 \
                                             --config.seed="${name#small_readcodes_student_jitter10ms_s}" ;;
    small_readcodes_student_exacttimes_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" \
                                              --config.model.decoder_reads_codes=True \
                                              --config.schedule.stage1_teacher=student \
                                              --config.loss.time_jitter_seconds=0 \
                                              --config.loss.own_time_prob=0 \
                                              --config.seed="${name#small_readcodes_student_exacttimes_s}" ;;
    small_exacttimes_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" --config.loss.time_jitter_seconds=0 \
                             --config.loss.own_time_prob=0 --config.seed="${name#small_exacttimes_s}" ;;
    small_endtimes_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" --config.targets.time_anchor=end \
                           --config.seed="${name#small_endtimes_s}" ;;
    small_clipapart_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" --config.optim.clip_stage0_apart=True \
                            --config.seed="${name#small_clipapart_s}" ;;
    small_sharp_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" --config.model.time_bias_scale=10 \
                        --config.seed="${name#small_sharp_s}" ;;
    small_pointer_sharp_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" --config.targets.time_anchor=end \
                                --config.model.time_head=pointer --config.model.time_bias_scale=10 \
                                --config.seed="${name#small_pointer_sharp_s}" ;;
    small_pointer_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" --config.targets.time_anchor=end \
                          --config.model.time_head=pointer --config.seed="${name#small_pointer_s}" ;;
    small_readcodes_student_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" \
                                    --config.model.decoder_reads_codes=True \
                                    --config.schedule.stage1_teacher=student \
                                    --config.seed="${name#small_readcodes_student_s}" ;;
    small_readcodes_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" --config.model.decoder_reads_codes=True \
                            --config.seed="${name#small_readcodes_s}" ;;
    small_longstage1_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" "${length_ctl[@]}" \
                             --config.num_train_steps=3000 --config.schedule.stage2_start=2400 \
                             --config.seed="${name#small_longstage1_s}" ;;
    small_frozenenc_nolenctl_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" \
                                     --config.schedule.freeze_encoder=stage1 \
                                     --config.seed="${name#small_frozenenc_nolenctl_s}" ;;
    small_frozenenc_nocorrupt_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" \
                                      --config.schedule.freeze_encoder=stage1 \
                                      --config.loss.prefix_corruption=0 \
                                      --config.seed="${name#small_frozenenc_nocorrupt_s}" ;;
    small_frozenenc_exacttimes_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" \
                                       --config.schedule.freeze_encoder=stage1 \
                                       --config.loss.time_jitter_seconds=0 \
                                       --config.loss.own_time_prob=0 \
                                       --config.seed="${name#small_frozenenc_exacttimes_s}" ;;
    small_frozenenc_readcodes_exacttimes_s*) run "$name" configs/small_corpus.py \
                                                 --config.schedule.freeze_encoder=stage1 \
                                                 --config.model.decoder_reads_codes=True \
                                                 --config.loss.time_jitter_seconds=0 \
                                                 --config.loss.own_time_prob=0 \
                                                 --config.seed="${name#small_frozenenc_readcodes_exacttimes_s}" ;;
    small_frozenenc_selftf_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" \
                                   --config.schedule.freeze_encoder=stage1 \
                                   --config.loss.cross_tf_weight=0 \
                                   --config.seed="${name#small_frozenenc_selftf_s}" ;;
    small_frozenenc_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" "${length_ctl[@]}" \
                            --config.schedule.freeze_encoder=stage1 \
                            --config.seed="${name#small_frozenenc_s}" ;;
    small_longstage0_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" "${length_ctl[@]}" \
                             --config.schedule.freeze_encoder=stage1 \
                             --config.num_train_steps=3600 --config.schedule.stage1_start=2000 \
                             --config.schedule.stage2_start=3000 \
                             --config.seed="${name#small_longstage0_s}" ;;
    small_ft_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" --config.seed="${name#small_ft_s}" \
                     --config.init_from="$root/${FT_FROM:-aug_only_s0}" --config.num_train_steps=600 \
                     --config.schedule.stage1_start=0 --config.schedule.stage2_start=0 \
                     --config.schedule.ema_warmup_steps=0 --config.optim.learning_rate=3e-4 ;;
    small_s*) run "$name" configs/small_corpus.py "${nolenctl[@]}" "${first_small[@]}" \
                  --config.seed="${name#small_s}" ;;
    synthetic_s*) run "$name" configs/synthetic.py --config.seed="${name#synthetic_s}" ;;
    *) echo "unknown run $name" >&2; exit 2 ;;
  esac
done
