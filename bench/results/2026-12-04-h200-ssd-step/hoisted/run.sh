set -u
out=$1
source bench/device/budget.sh 400
mkdir -p "$out"
G=granite4h-350m-like
ab_envs "$out" 40 $G
ab_envs "$out" 40 $G STRATA_SSD_PROJECTION=heads STRATA_SSD_THREADS=1024 STRATA_PROJECTION_ROTATE=1
ab_envs "$out" 40 $G STRATA_SSD_PROJECTION=heads STRATA_SSD_THREADS=1024 STRATA_PROJECTION_ROTATE=1 STRATA_SSD_DIAG=bc8
ab_envs "$out" 40 $G STRATA_SSD_PROJECTION=heads STRATA_SSD_DIAG=bc8
ab_envs "$out" 40 $G STRATA_SSD_PROJECTION=heads
ab_envs "$out" 40 llama-400m
ab_envs "$out" 40 $G
grep -E '^==|batch 1|ssdstep|attention|matvec ' "$out/ab.log"
