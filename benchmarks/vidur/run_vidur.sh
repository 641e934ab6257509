#!/bin/sh
# One Vidur run of the benchmark setting, as a whole process writing its outputs.
#   run_vidur.sh VIDUR_CHECKOUT PYTHON NUM_REQUESTS OUT_DIR CACHE_DIR [MORE VIDUR OPTIONS]
# Llama-2-7B on a100 / a100_pairwise_nvlink, 1 replica, TP 1, vllm scheduler (block 16, batch cap
# 128, 4,096 tokens per batch), ShareGPT lengths (max_tokens 4096) with Poisson arrivals at 1.5
# req/s (seed 42), Chrome trace and plots off, wandb off. The random-forest predictor's grid is
# cut to one point (250 trees, depth 32, min split 2, 2-fold CV) so that training fits the time
# available; it runs once, and later runs load the models and lookup tables from CACHE_DIR.
set -e
cd "$1"
PY=$2 N=$3 OUT=$4 CACHE=$5
shift 5
export WANDB_MODE=disabled
exec "$PY" -m vidur.main \
  --replica_config_device a100 --replica_config_network_device a100_pairwise_nvlink \
  --replica_config_model_name meta-llama/Llama-2-7b-hf --cluster_config_num_replicas 1 \
  --replica_config_tensor_parallel_size 1 --replica_config_num_pipeline_stages 1 \
  --replica_scheduler_config_type vllm --vllm_scheduler_config_block_size 16 \
  --vllm_scheduler_config_batch_size_cap 128 --vllm_scheduler_config_max_tokens_in_batch 4096 \
  --request_generator_config_type synthetic --synthetic_request_generator_config_num_requests "$N" \
  --length_generator_config_type trace \
  --trace_request_length_generator_config_trace_file /work/shared/data/sharegpt_8k_filtered_stats_llama2_tokenizer.csv \
  --trace_request_length_generator_config_max_tokens 4096 \
  --interval_generator_config_type poisson --poisson_request_interval_generator_config_qps 1.5 \
  --execution_time_predictor_config_type random_forrest \
  --random_forrest_execution_time_predictor_config_num_estimators 250 \
  --random_forrest_execution_time_predictor_config_max_depth 32 \
  --random_forrest_execution_time_predictor_config_min_samples_split 2 \
  --random_forrest_execution_time_predictor_config_k_fold_cv_splits 2 \
  --no-metrics_config_enable_chrome_trace --no-metrics_config_store_plots \
  --metrics_config_output_dir "$OUT" --metrics_config_cache_dir "$CACHE" "$@"
